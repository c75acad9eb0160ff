"""The analysis package stays pure and warms up."""

from __future__ import annotations

import subprocess
import sys

from analysis import warmup


def test_importing_analysis_pulls_in_no_service_layer():
    code = (
        "import sys, analysis; "
        "bad = [m for m in ('celery', 'kombu', 'fastapi', 'sqlalchemy', 'tasks', 'api') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_module_imports_nothing_heavy():
    code = "import sys, analysis.version as v; print(v.ANALYZER_VERSION, 'librosa' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, librosa_loaded = out.stdout.split()
    assert version and librosa_loaded == "False"


def test_warmup_runs_every_profile():
    warmup()
