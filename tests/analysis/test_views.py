"""The Spotify-shaped views (analysis/views.py) of real analyses, against answers known by
construction: the samples' keys and tempo, the file's own length, silence, a 3/4 click track."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from analysis import Analysis, analyze_file
from analysis.views import SCORES, audio_analysis, audio_features
from tests.analysis.signals import write

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SR = 22050


@pytest.fixture(scope="module")
def click() -> Analysis:
    # samples/README.md: clicks at 120 BPM over C - F - G - C.
    return analyze_file(SAMPLES / "click120_cmajor.flac")


def test_duration_ms_is_the_files_length_in_milliseconds(click: Analysis) -> None:
    info = sf.info(SAMPLES / "click120_cmajor.flac")
    assert audio_features(click.document)["duration_ms"] == round(
        info.frames / info.samplerate * 1000
    )


@pytest.mark.parametrize(
    ("sample", "key", "mode"),
    [("click120_cmajor.flac", 0, 1), ("aminor_progression.flac", 9, 0)],
)
def test_key_is_the_pitch_class_and_mode_is_1_for_major(sample: str, key: int, mode: int) -> None:
    document = analyze_file(SAMPLES / sample).document
    features = audio_features(document)
    assert (features["key"], features["mode"]) == (key, mode)
    track = audio_analysis(document, [])["track"]
    assert (track["key"], track["mode"]) == (key, mode)


def test_silence_has_no_key_no_beats_and_the_loudness_floor(tmp_path: Path) -> None:
    path = write(tmp_path / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    document = analyze_file(path).document
    features = audio_features(document)
    assert features["key"] == -1
    assert features["tempo"] == 0.0
    assert features["loudness"] == -70.0
    # No sound, no evidence: every perceptual score is null, never a default.
    assert [features[name] for name in SCORES] == [None] * 7
    view = audio_analysis(document, [])
    assert view["beats"] == [] and view["bars"] == [] and view["tatums"] == []
    assert view["track"]["time_signature_confidence"] == 0.0


def test_beats_follow_each_other_and_their_durations_sum_to_the_span(click: Analysis) -> None:
    view = audio_analysis(click.document, click.segments)
    beats = view["beats"]
    assert len(beats) >= 12  # 8 s at 120 BPM
    for a, b in itertools.pairwise(beats):
        assert a["start"] + a["duration"] == pytest.approx(b["start"], abs=1e-4)
    span = beats[-1]["start"] + beats[-1]["duration"] - beats[0]["start"]
    assert sum(b["duration"] for b in beats) == pytest.approx(span, abs=1e-3)
    # The last beat lasts a beat (0.5 s at 120 BPM) or until the file ends (8 s).
    last = beats[-1]
    assert last["duration"] == pytest.approx(min(0.5, 8.0 - last["start"]), abs=0.03)
    assert last["start"] + last["duration"] <= view["track"]["duration"]
    # Nothing lasts past the end of the file (a segment's last frame may reach a hop beyond).
    for name in ("bars", "tatums", "sections", "segments"):
        assert all(i["start"] + i["duration"] <= 8.0 + 1e-6 for i in view[name]), name


def test_the_views_never_load_numpy() -> None:
    """The API builds them on request: analysis.views must stay light."""
    code = "import sys, analysis.views; print(sorted({'numpy', 'librosa'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def accented_clicks(beats_per_bar: int, *, bpm: float = 120.0, seconds: float = 16.0) -> np.ndarray:
    """Clicks at ``bpm``, the first of every ``beats_per_bar`` three times as loud and lower."""
    y = np.zeros(int(seconds * SR), np.float32)
    period = 60.0 / bpm
    t = np.arange(int(0.03 * SR)) / SR
    for i in range(int(seconds / period)):
        downbeat = i % beats_per_bar == 0
        hz, amplitude = (880.0, 0.9) if downbeat else (1760.0, 0.3)
        start = int(i * period * SR)
        click = amplitude * np.sin(2 * np.pi * hz * t) * np.exp(-t / 0.008)
        y[start : start + t.size] += click[: y.size - start].astype(np.float32)
    return y


@pytest.mark.parametrize("beats_per_bar", [3, 4])
def test_bars_start_at_the_downbeats(tmp_path: Path, beats_per_bar: int) -> None:
    path = write(tmp_path / "clicks.wav", accented_clicks(beats_per_bar), SR)
    analysis = analyze_file(path)
    summary = analysis.document["summary"]
    view = audio_analysis(analysis.document, analysis.segments)
    bars = view["bars"]
    assert len(bars) >= 3
    assert [b["start"] for b in bars] == [round(t, 5) for t in summary["downbeats_s"]]
    # By construction the downbeats are every beats_per_bar-th click, 0.5 s apart.
    bar_s = beats_per_bar * 0.5
    off_grid = [min(b["start"] % bar_s, bar_s - b["start"] % bar_s) for b in bars]
    assert max(off_grid) < 0.05
    assert view["track"]["time_signature"] == beats_per_bar
    assert audio_features(analysis.document)["time_signature"] == beats_per_bar
    # A bar spans its beats: its duration is the sum of theirs.
    for bar in bars[:-1]:
        inside = [
            b["duration"]
            for b in view["beats"]
            if bar["start"] - 1e-3 <= b["start"] < bar["start"] + bar["duration"] - 1e-3
        ]
        assert len(inside) == beats_per_bar
        assert sum(inside) == pytest.approx(bar["duration"], abs=2e-3)


def test_the_earshot_block_names_each_scores_method_for_this_analyzer_only(
    click: Analysis,
) -> None:
    features = audio_features(click.document)
    methods = features["earshot"]["score_methods"]
    assert sorted(methods) == sorted(SCORES) and all(methods.values())
    assert features["earshot"]["analyzer_version"] == click.document["analyzer_version"]
    # A result of another analyzer version: its methods are not this code's to name.
    older = {**click.document, "analyzer_version": "0.0.1"}
    assert audio_analysis(older, [])["earshot"]["score_methods"] == {}
