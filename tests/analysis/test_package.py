"""The analysis package stays pure and warms up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import PROFILES, warmup

ANALYSIS_DIR = Path(__file__).resolve().parents[2] / "analysis"


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


def test_profiles_and_version_import_neither_numpy_nor_librosa():
    # The API and the CLI's argument parser take the profile names from here.
    code = (
        "import sys, analysis.profiles as p, analysis.version; "
        "print(','.join(p.PROFILES)); "
        "print(','.join(m for m in ('librosa', 'numpy', 'numba', 'scipy', 'soundfile') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy = out.stdout.split("\n")[:2]
    assert names.split(",") == ["standard", "fast"]
    assert heavy == ""


# The hop of each profile as docs/api.md states it; the warm-up signal is 3 s, resampled to
# the analysis rate of 22050 Hz.
DOCUMENTED_HOPS = {"standard": 512, "fast": 1024}


def test_warmup_runs_every_profile():
    results = warmup()
    assert set(results) == set(PROFILES) == set(DOCUMENTED_HOPS)
    for profile, analysis in results.items():
        doc = analysis.document
        assert doc["profile"] == profile
        assert doc["audio"]["duration_s"] == pytest.approx(3.0)
        # librosa.stft(center=True) makes 1 + n // hop frames of n samples.
        n_frames = 1 + 3 * 22050 // DOCUMENTED_HOPS[profile]
        assert doc["frames"]["count"] == n_frames
        assert all(v.shape == (n_frames,) for v in analysis.frames.values())
        # A click every half second: 120 BPM, beats on the clicks.
        assert doc["summary"]["tempo"]["bpm"] == pytest.approx(120.0, abs=3.0)
        beats = doc["summary"]["beats_s"]
        assert len(beats) >= 4
        assert all(abs(b - round(b * 2) / 2) < 0.06 for b in beats)
        # The chord is C4, E4, G4: those pitch classes lead the chroma.
        chroma = doc["summary"]["chroma"]["mean"]
        top = sorted(range(12), key=lambda i: chroma[i])[-3:]
        assert sorted(doc["summary"]["chroma"]["pitch_classes"][i] for i in top) == ["C", "E", "G"]


def _private_uses(path: Path) -> list[str]:
    """Private names a module takes from another: ``from analysis.x import _y`` and
    ``obj._y`` on anything but ``self``/``cls``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("analysis"):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("_")]
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in ANALYSIS_DIR.glob("*.py")))
def test_no_module_reaches_into_another_modules_private_names(module: str):
    assert _private_uses(ANALYSIS_DIR / module) == []


@pytest.mark.parametrize("module", sorted(p.name for p in ANALYSIS_DIR.glob("*.py")))
def test_a_module_over_500_lines_says_why_in_its_docstring(module: str):
    source = (ANALYSIS_DIR / module).read_text(encoding="utf-8")
    if source.count("\n") > 500:
        docstring = ast.get_docstring(ast.parse(source)) or ""
        assert "500 lines" in docstring, f"{module} has {source.count(chr(10))} lines and no reason"
