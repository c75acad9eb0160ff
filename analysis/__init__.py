"""earshot's analysis core: pure functions from an audio file to a result document.

No settings, no Celery, no environment: ``from analysis import analyze_file`` works in a
notebook. Names are resolved on first use (PEP 562), so ``import analysis.version``,
``analysis.profiles`` or ``analysis.errors`` stays cheap for processes that never analyse (the
API): none of them imports numpy or librosa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analysis.analyze import Analysis, analyze_file
    from analysis.limits import Limits
    from analysis.profiles import PROFILES
    from analysis.version import ANALYZER_VERSION
    from analysis.warmup import warmup

__all__ = ["ANALYZER_VERSION", "PROFILES", "Analysis", "Limits", "analyze_file", "warmup"]

_HOMES = {
    "ANALYZER_VERSION": "analysis.version",
    "PROFILES": "analysis.profiles",
    "Analysis": "analysis.analyze",
    "analyze_file": "analysis.analyze",
    "Limits": "analysis.limits",
    "warmup": "analysis.warmup",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
