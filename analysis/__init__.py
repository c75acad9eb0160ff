"""earshot's analysis core: pure functions from an audio file to a result document.

No settings, no Celery, no environment: ``from analysis import analyze_file`` works in a
notebook.
"""

from __future__ import annotations

from analysis.analyze import PROFILES, Analysis, analyze_file
from analysis.limits import Limits
from analysis.version import ANALYZER_VERSION
from analysis.warmup import warmup

__all__ = ["ANALYZER_VERSION", "PROFILES", "Analysis", "Limits", "analyze_file", "warmup"]
