"""`earshot worker` pays start-up costs before its pool forks, not in its first tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Prints which matplotlib modules are loaded before and after warm_up_plots().
PROBE = """
import sys
from earshot.service_cmd import warm_up_plots
loaded = lambda: {"matplotlib.figure", "matplotlib.backends.backend_agg"} <= set(sys.modules)
before = loaded()
warm_up_plots()
print(before, loaded())
"""


def test_a_render_pool_loads_matplotlib_before_it_forks() -> None:
    # A fresh interpreter: this test session may have imported matplotlib already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True"]
