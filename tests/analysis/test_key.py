"""The key, its candidates and its local segments against keys known by construction: chord
progressions synthesized in a chosen key, and a piece that modulates at a chosen time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import analyze_file
from analysis.tonal import PITCH_CLASSES, frame_pitch_classes, key_scores
from tests.analysis.signals import write

SR = 22050
# Diatonic triads as (root, third, fifth) semitones above the tonic, one chord per half second:
# I IV V I vi ii V I in major, i iv V i VI iv V i in minor (the harmonic minor's major V, as
# played).
MAJOR_CHORDS = [
    (0, 4, 7),
    (5, 9, 12),
    (7, 11, 14),
    (0, 4, 7),
    (9, 12, 16),
    (2, 5, 9),
    (7, 11, 14),
    (0, 4, 7),
]
MINOR_CHORDS = [
    (0, 3, 7),
    (5, 8, 12),
    (7, 11, 14),
    (0, 3, 7),
    (8, 12, 15),
    (5, 8, 12),
    (7, 11, 14),
    (0, 3, 7),
]


def _note(midi: int, seconds: float) -> np.ndarray:
    """A tone with five harmonics, each 0.6 of the previous, 20 ms attack and 50 ms release."""
    t = np.arange(int(seconds * SR)) / SR
    hz = 440.0 * 2.0 ** ((midi - 69) / 12)
    y = sum(0.6 ** (h - 1) * np.sin(2 * np.pi * hz * h * t) for h in range(1, 6))
    return y * np.minimum(1.0, np.minimum(t / 0.02, (seconds - t) / 0.05))


def progression(tonic: str, mode: str, bars: int, chord_s: float = 0.5) -> np.ndarray:
    """``bars`` times the key's 8-chord progression, each chord over its root in the bass."""
    pc = PITCH_CLASSES.index(tonic)
    chords = MAJOR_CHORDS if mode == "major" else MINOR_CHORDS
    out = []
    for _ in range(bars):
        for chord in chords:
            notes = [36 + pc + chord[0], *(60 + pc + n for n in chord)]
            out.append(sum(_note(m, chord_s) for m in notes) * 0.08)
    return np.concatenate(out).astype(np.float32)


@pytest.mark.parametrize(
    ("tonic", "mode"), [("D", "major"), ("A#", "major"), ("F", "minor"), ("C#", "minor")]
)
def test_progression_gives_its_key_first_among_candidates(tmp_path: Path, tonic: str, mode: str):
    y = progression(tonic, mode, bars=3)
    key = analyze_file(write(tmp_path / "p.wav", y, SR)).document["summary"]["key"]
    assert (key["tonic"], key["mode"]) == (tonic, mode)
    assert len(key["candidates"]) == 3
    assert (key["candidates"][0]["tonic"], key["candidates"][0]["mode"]) == (tonic, mode)
    scores = [c["score"] for c in key["candidates"]]
    assert scores == sorted(scores, reverse=True)
    # No modulation: one segment, the whole file, in the file's key.
    [segment] = key["segments"]
    assert (segment["tonic"], segment["mode"]) == (tonic, mode)
    assert segment["start_s"] == 0.0
    assert segment["end_s"] == pytest.approx(y.size / SR, abs=0.01)


@pytest.mark.parametrize(
    ("before", "after"), [(("C", "major"), ("G", "major")), (("D", "minor"), ("F#", "major"))]
)
def test_modulation_gives_two_segments_split_at_the_change(
    tmp_path: Path, before: tuple[str, str], after: tuple[str, str]
):
    """C to G major is the hardest change (six of seven notes shared); D minor to F# major a
    distant one. 20 s in each key."""
    change_s = 20.0
    y = np.concatenate([progression(*before, bars=5), progression(*after, bars=5)])
    key = analyze_file(write(tmp_path / "mod.wav", y, SR)).document["summary"]["key"]
    first, second = key["segments"]
    assert (first["tonic"], first["mode"]) == before
    assert (second["tonic"], second["mode"]) == after
    assert first["start_s"] == 0.0 and second["end_s"] == pytest.approx(y.size / SR, abs=0.01)
    assert first["end_s"] == second["start_s"] == pytest.approx(change_s, abs=2.0)
    assert min(first["confidence"], second["confidence"]) > 0.5


@pytest.mark.parametrize(("hz", "pitch_class"), [(110.0, "A"), (116.54, "A#"), (65.41, "C")])
def test_low_notes_land_on_their_pitch_class(hz: float, pitch_class: str):
    """Below ~180 Hz the 10.8 Hz bins are wider than a semitone; the interpolated peak is not."""
    n_fft = 2048
    t = np.arange(n_fft * 8) / SR
    frames = np.lib.stride_tricks.sliding_window_view(np.sin(2 * np.pi * hz * t), n_fft)[::512]
    S = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)).astype(np.float32)
    pcp = frame_pitch_classes(S, SR, n_fft, tuning=0.0)
    assert np.all(np.argmax(pcp, axis=1) == PITCH_CLASSES.index(pitch_class))
    assert np.allclose(pcp.max(axis=1), 1.0)


def test_scores_prefer_the_scale_of_the_key():
    """A C major scale's pitch classes (tonic and fifth doubled) score C major above every key."""
    counts = np.zeros(12)
    counts[[0, 2, 4, 5, 7, 9, 11]] = 1.0
    counts[[0, 7]] += 1.0
    scores = key_scores(counts)
    assert int(np.argmax(scores)) == 0  # C major, above G major (7) and A minor (12 + 9)


def test_white_noise_has_no_confident_key(tmp_path: Path):
    """Noise has no key: some key still scores best, but the confidence says it means nothing."""
    y = (np.random.default_rng(7).standard_normal(5 * SR) * 0.1).astype(np.float32)
    key = analyze_file(write(tmp_path / "noise.wav", y, SR)).document["summary"]["key"]
    assert key["confidence"] < 0.1


def test_silence_has_no_key_candidates(tmp_path: Path):
    path = write(tmp_path / "silence.wav", np.zeros(3 * SR, dtype=np.float32), SR)
    key = analyze_file(path).document["summary"]["key"]
    assert key["confidence"] == 0.0 and key["candidates"] == []
    assert key["segments"] == [
        {"start_s": 0.0, "end_s": 3.0, "tonic": "C", "mode": "major", "confidence": 0.0}
    ]
