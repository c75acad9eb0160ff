"""analyze_file end to end: known answers on synthetic signals, the document, progress."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis import ANALYZER_VERSION, PROFILES, Analysis, analyze_file
from analysis.errors import UnknownProfile
from tests.analysis.signals import sine, write


@pytest.fixture(scope="module")
def click_c_major(request: pytest.FixtureRequest) -> Analysis:
    return analyze_file(Path(request.config.rootpath) / "samples" / "click120_cmajor.flac")


def _all_floats(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in _all_floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _all_floats(v)]
    return [value] if isinstance(value, float) else []


def test_sine_440_has_its_centroid_near_440(samples_dir: Path):
    summary = analyze_file(samples_dir / "sine440.flac").document["summary"]
    assert summary["spectral_centroid_hz"]["mean"] == pytest.approx(440.0, rel=0.02)
    assert summary["spectral_rolloff_hz"]["mean"] == pytest.approx(440.0, rel=0.1)
    assert summary["loudness"]["peak_dbfs"] == pytest.approx(-6.02, abs=0.05)
    assert summary["chroma"]["mean"][9] == pytest.approx(1.0)  # A
    assert summary["tempo"]["bpm"] == 0.0 and summary["beats_s"] == []


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg", "opus", "m4a"])
def test_click_track_at_120_bpm_in_c_major(samples_dir: Path, ext: str):
    summary = analyze_file(samples_dir / f"click120_cmajor.{ext}").document["summary"]
    assert summary["tempo"]["bpm"] == pytest.approx(120.0, abs=2.0)
    assert summary["tempo"]["confidence"] > 0.3
    assert (summary["key"]["tonic"], summary["key"]["mode"]) == ("C", "major")
    beats = np.asarray(summary["beats_s"])
    assert len(beats) >= 12
    assert np.median(np.diff(beats)) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("ext", ["wav", "mp3", "m4a"])
def test_a_minor_progression_is_in_a_minor(samples_dir: Path, ext: str):
    key = analyze_file(samples_dir / f"aminor_progression.{ext}").document["summary"]["key"]
    assert (key["tonic"], key["mode"]) == ("A", "minor")
    assert key["confidence"] > 0.5


def test_tempo_octave_is_folded_into_the_preferred_range(tmp_path: Path, rng):
    # Clicks at 240 BPM are felt at 120: the analysis must not report 240.
    sr = 22050
    y = np.zeros(10 * sr, dtype=np.float32)
    for i in range(0, y.size, sr // 4):
        y[i : i + 200] += rng.uniform(-0.8, 0.8, min(200, y.size - i))
    summary = analyze_file(write(tmp_path / "fast.wav", y, sr)).document["summary"]
    assert summary["tempo"]["bpm"] == pytest.approx(120.0, abs=2.0)


def test_silence_is_silent(tmp_path: Path):
    path = write(tmp_path / "silence.wav", np.zeros(3 * 22050, dtype=np.float32), 22050)
    analysis = analyze_file(path)
    summary = analysis.document["summary"]
    assert summary["silence_ratio"] == 1.0
    assert summary["beats_s"] == []
    assert summary["tempo"] == {"bpm": 0.0, "confidence": 0.0, "candidates": []}
    assert summary["onset_rate_per_s"] == 0.0
    assert summary["key"]["confidence"] == 0.0
    assert summary["loudness"]["integrated_lufs"] == -70.0
    assert summary["loudness"]["peak_dbfs"] == -120.0
    assert all(math.isfinite(f) for f in _all_floats(analysis.document))
    assert all(np.isfinite(v).all() for v in analysis.frames.values())


def test_clipping_is_detected(tmp_path: Path):
    y = np.clip(3.0 * sine(220.0, 3.0, 44100), -1.0, 1.0)
    loudness = analyze_file(write(tmp_path / "hot.wav", y, 44100)).document["summary"]["loudness"]
    assert loudness["peak_dbfs"] == pytest.approx(0.0, abs=0.01)
    # A sine at 1.5x full scale is at or above 0.999 for 1 - (2/pi) asin(0.999/1.5) = 53.6%
    # of the time.
    assert loudness["clipping_ratio"] == pytest.approx(0.536, abs=0.01)


def test_unclipped_signal_has_no_clipping(samples_dir: Path):
    loudness = analyze_file(samples_dir / "sine440.wav").document["summary"]["loudness"]
    assert loudness["clipping_ratio"] == 0.0


def test_document_shape_and_frames(click_c_major: Analysis):
    doc = click_c_major.document
    json.dumps(doc, allow_nan=False)
    assert doc["analyzer_version"] == ANALYZER_VERSION
    assert doc["profile"] == "standard"
    assert doc["audio"]["duration_s"] == pytest.approx(8.0, abs=1e-3)
    assert len(doc["audio"]["sha256"]) == 64
    assert len(doc["summary"]["mfcc"]["mean"]) == 20 and len(doc["summary"]["mfcc"]["std"]) == 20
    assert len(doc["summary"]["chroma"]["mean"]) == 12
    assert len(doc["summary"]["spectral_contrast_db"]["mean"]) == 7
    assert doc["frames"]["names"] == list(click_c_major.frames)
    assert doc["frames"]["hop_s"] == click_c_major.hop_s
    lengths = {v.shape for v in click_c_major.frames.values()}
    assert lengths == {(doc["frames"]["count"],)}
    assert all(v.dtype == np.float32 for v in click_c_major.frames.values())
    assert doc["frames"]["count"] == 1 + int(8.0 * 22050) // 512


def test_fast_profile_agrees_on_tempo_and_key(samples_dir: Path):
    assert "fast" in PROFILES and "standard" in PROFILES
    analysis = analyze_file(samples_dir / "click120_cmajor.wav", profile="fast")
    summary = analysis.document["summary"]
    assert analysis.document["profile"] == "fast"
    assert analysis.hop_s == pytest.approx(1024 / 22050)
    assert summary["tempo"]["bpm"] == pytest.approx(120.0, abs=2.0)
    assert (summary["key"]["tonic"], summary["key"]["mode"]) == ("C", "major")


def test_unknown_profile(samples_dir: Path):
    with pytest.raises(UnknownProfile, match="unknown profile 'slow'"):
        analyze_file(samples_dir / "sine440.wav", profile="slow")


def test_progress_fractions_increase_to_one(samples_dir: Path):
    calls: list[tuple[str, float]] = []
    analyze_file(samples_dir / "click120_cmajor.ogg", progress=lambda s, f: calls.append((s, f)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(set(fractions))
    assert fractions[0] >= 0.0 and fractions[-1] == 1.0
    stages = [s for s, _ in calls]
    assert stages[0] == "decode+features" and stages[-1] == "done"
    # In the order they run, each named for the work that follows its report.
    order = ["decode+features", "features", "rhythm", "key+structure", "done"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == order


class Canceled(Exception):
    pass


def test_exception_from_progress_propagates_unchanged(samples_dir: Path):
    seen: list[float] = []

    def cancel_during_features(stage: str, fraction: float) -> None:
        seen.append(fraction)
        if stage == "features":
            raise Canceled(stage)

    with pytest.raises(Canceled, match="features"):
        analyze_file(samples_dir / "click120_cmajor.flac", progress=cancel_during_features)
    assert seen[-1] < 1.0


def test_exception_from_progress_during_decode_propagates(samples_dir: Path):
    def cancel(stage: str, fraction: float) -> None:
        if fraction > 0.0:
            raise Canceled(stage)

    with pytest.raises(Canceled, match="decode"):
        analyze_file(samples_dir / "click120_cmajor.m4a", progress=cancel)
