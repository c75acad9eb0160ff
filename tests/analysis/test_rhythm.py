"""Tempo, its candidates and the beats on click patterns whose beat is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from analysis.features import spectral_features
from analysis.profiles import get_profile
from analysis.rhythm import Rhythm, backbeat, estimate_tempo, rhythm, welch_power

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
    return rhythm(
        features.series["onset_strength"],
        SR,
        hop_length=params.hop_length,
        bands=features.matrices["onset_bands"],
    )


def groove(bpm: float, *, seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    """A rock beat: bass drum on beats 1 and 3, snare on 2 and 4, a closed hi-hat on every
    eighth note. The beat is the bass drum / snare alternation, by construction."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.15 * SR)) / SR
    kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-t / 0.02)) * t) * np.exp(-t / 0.05)
    highpass = scipy.signal.butter(4, 1000.0, "highpass", fs=SR, output="sos")
    y = np.zeros(int(seconds * SR))

    def put(x: np.ndarray, at: float) -> None:
        start = round(at * SR)
        n = min(x.size, y.size - start)
        y[start : start + n] += x[:n]

    beat = 60.0 / bpm
    for i, at in enumerate(np.arange(0.25, seconds - 0.3, beat)):
        if i % 2 == 0:
            put(kick, at)
        else:
            # The snare's wires: noise above 1 kHz.
            noise = scipy.signal.sosfilt(highpass, rng.standard_normal(int(0.12 * SR)))
            put(0.5 * noise * np.exp(-t[: noise.size] / 0.03), at)
        for half in (0.0, 0.5):
            hiss = np.diff(rng.standard_normal(int(0.04 * SR)), prepend=0.0)
            put(0.15 * hiss * np.exp(-t[: hiss.size] / 0.01), at + half * beat)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


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


@pytest.mark.parametrize("profile", ["standard", "fast"])
@pytest.mark.parametrize("bpm", [70.0, 170.0])
def test_backbeat_is_strongest_at_the_bass_drum_snare_alternation(bpm: float, profile: str) -> None:
    params = get_profile(profile)
    features = spectral_features(
        groove(bpm), SR, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels
    )
    bands = features.matrices["onset_bands"]
    assert bands.shape == (2, features.series["onset_strength"].size)
    period = SR / params.hop_length * 60.0 / bpm
    at_beat = backbeat(bands, period)
    # Bass drum and snare answer each other one beat apart; half a beat apart only hats
    # answer them, and two beats apart the bass drum meets the bass drum (whose attack and
    # the hats still reach the high band).
    assert at_beat > 0.3
    assert at_beat > backbeat(bands, period / 2) + 0.05
    assert at_beat > backbeat(bands, period * 2) + 0.05


def test_the_backbeat_decides_a_grooves_octave() -> None:
    # At 70 BPM with eighth-note hats, the onsets alone favour the eighths (140): a beat
    # holding one onset, nearer the prior's centre. The alternation of bass drum and snare
    # says the beat is 70.
    params = get_profile("standard")
    features = spectral_features(groove(70.0), SR)
    env = features.series["onset_strength"]
    without = rhythm(env, SR, hop_length=params.hop_length)
    with_bands = rhythm(
        env, SR, hop_length=params.hop_length, bands=features.matrices["onset_bands"]
    )
    assert without.bpm == pytest.approx(140.0, rel=0.02)
    assert with_bands.bpm == pytest.approx(70.0, rel=0.02)
    assert any(_near(b, 140.0) for b, _ in with_bands.candidates)


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
