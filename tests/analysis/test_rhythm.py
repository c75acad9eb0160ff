"""Tempo, its candidates and the beats on click patterns whose beat is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from analysis.features import spectral_features
from analysis.profiles import get_profile
from analysis.rhythm import Rhythm, estimate_tempo, rhythm, welch_power

SR = 22050


def _click(hz: float, sr: int = SR) -> np.ndarray:
    """A 60 ms decaying tone burst: a metronome's tick."""
    t = np.arange(int(0.06 * sr)) / sr
    return np.sin(2 * np.pi * hz * t) * np.exp(-t / 0.015)


def pattern(
    beat_bpm: float, per_beat: int, accents: list[float], *, seconds: float = 16.0
) -> np.ndarray:
    """Ticks ``per_beat`` to a beat of ``beat_bpm``, with amplitude ``accents[i % len]``.

    The beat is the only pulse the accents mark at its period: e.g. 6/8 is ``per_beat=3``
    with accents ``[1, .3, .3, .7, .3, .3]`` (dotted-quarter beats, the first of a bar
    strongest), 3/4 is ``per_beat=1`` with ``[1, .4, .4]``.
    """
    y = np.zeros(int(seconds * SR))
    step = 60.0 / beat_bpm / per_beat
    for i, t in enumerate(np.arange(0.25, seconds - 0.1, step)):
        a = accents[i % len(accents)]
        tick = _click(880.0 if a >= 0.99 else 1760.0)
        start = round(t * SR)
        n = min(tick.size, y.size - start)
        y[start : start + n] += 0.8 * a * tick[:n]
    return y.astype(np.float32)


def analyse(y: np.ndarray, profile: str = "standard") -> Rhythm:
    params = get_profile(profile)
    features = spectral_features(
        y, SR, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels
    )
    return rhythm(features.series["onset_strength"], SR, hop_length=params.hop_length)


def _near(bpm: float, target: float, rel: float = 0.02) -> bool:
    return abs(bpm - target) <= rel * target


@pytest.mark.parametrize("profile", ["standard", "fast"])
@pytest.mark.parametrize("bpm", [60.0, 90.0, 120.0, 150.0, 180.0])
def test_click_track_tempo_and_beats(bpm: float, profile: str) -> None:
    rhy = analyse(pattern(bpm, 1, [1.0]), profile)
    assert rhy.bpm == pytest.approx(bpm, rel=0.01)
    # The beat tracker runs at the chosen tempo, not at its period rounded to whole frames
    # (180 BPM is 7.18 frames of the fast profile): beats one period apart.
    assert np.median(np.diff(rhy.beats_s)) == pytest.approx(60.0 / bpm, rel=0.01)
    # And on the clicks, but for librosa's last beat or two: within 40 ms in the standard
    # profile (the envelope peaks a frame, 23 ms, after an attack); the fast profile's 46 ms
    # frames allow its beats twice that.
    clicks = np.arange(0.25, 16.0 - 0.1, 60.0 / bpm)
    error = np.min(np.abs(rhy.beats_s[:, None] - clicks[None, :]), axis=1)
    assert np.mean(error < (0.04 if profile == "standard" else 0.08)) >= 0.9
    assert rhy.beats_s.size >= 0.8 * clicks.size


@pytest.mark.parametrize("bpm", [90.0, 140.0])
def test_three_four_accented_downbeats_give_the_quarter_note(bpm: float) -> None:
    rhy = analyse(pattern(bpm, 1, [1.0, 0.4, 0.4]))
    assert rhy.bpm == pytest.approx(bpm, rel=0.02)


@pytest.mark.parametrize("profile", ["standard", "fast"])
@pytest.mark.parametrize("bpm", [80.0, 100.0, 120.0])
def test_six_eight_gives_the_dotted_quarter(bpm: float, profile: str) -> None:
    # Eighth notes at 3 x bpm, accented on 1 and 4: not the eighths (x3), not a quarter
    # note (x1.5), which the pulse does not mark.
    rhy = analyse(pattern(bpm, 3, [1.0, 0.3, 0.3, 0.7, 0.3, 0.3]), profile)
    assert rhy.bpm == pytest.approx(bpm, rel=0.02)


@pytest.mark.parametrize("bpm", [90.0, 120.0])
def test_candidates_hold_the_half_and_the_double(bpm: float) -> None:
    rhy = analyse(pattern(bpm, 1, [1.0]))
    bpms = [b for b, _ in rhy.candidates]
    weights = [w for _, w in rhy.candidates]
    assert 1 <= len(rhy.candidates) <= 3
    assert bpms[0] == rhy.bpm and weights[0] == rhy.confidence
    assert weights == sorted(weights, reverse=True)
    assert all(0.0 <= w <= 1.0 for w in weights) and sum(weights) <= 1.0 + 1e-9
    assert any(_near(b, bpm / 2) for b in bpms[1:])
    assert any(_near(b, bpm * 2) for b in bpms[1:])
    # A steady click is unambiguous: its own tempo takes nearly all the weight.
    assert rhy.confidence > 0.9


def test_an_unaccented_fast_pulse_is_grouped_in_twos() -> None:
    # 240 BPM ticks with no accent: every second and every third tick are equally unmarked,
    # and the binary grouping (120) is the one heard; 80 and 240 remain candidates.
    rhy = analyse(pattern(240.0, 1, [1.0]))
    assert rhy.bpm == pytest.approx(120.0, rel=0.02)
    assert any(_near(b, 240.0) for b, _ in rhy.candidates)
    assert rhy.confidence < 0.9


def test_estimate_tempo_agrees_with_rhythm() -> None:
    y = pattern(100.0, 1, [1.0, 0.5])
    params = get_profile("standard")
    env = spectral_features(y, SR).series["onset_strength"]
    rhy = rhythm(env, SR, hop_length=params.hop_length)
    assert estimate_tempo(env, SR, params.hop_length) == (rhy.bpm, rhy.confidence)


def test_no_pulse_no_candidates() -> None:
    t = np.arange(5 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    rhy = analyse(tone)
    assert (rhy.bpm, rhy.confidence, rhy.candidates) == (0.0, 0.0, ())
    assert rhy.beats_s.size == 0


def test_blockwise_welch_is_scipys_welch_up_to_a_constant(rng: np.random.Generator) -> None:
    env = rng.random(5000) + np.sin(np.arange(5000) / 7.0)
    freqs, ours = welch_power(env, 43.07, window=344, nfft=8192, block=7)
    ref_freqs, ref = scipy.signal.welch(
        env, fs=43.07, window="hann", nperseg=344, noverlap=344 * 3 // 4, nfft=8192
    )
    np.testing.assert_allclose(freqs, ref_freqs)
    # scipy doubles the one-sided interior bins and scales by the window's power.
    inner = slice(1, -1)
    ratio = ref[inner] / ours[inner]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
