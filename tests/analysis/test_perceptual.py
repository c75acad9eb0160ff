"""Perceptual scores (summary.scores): known answers on audio that sits at one end of each.

The truth is in the construction: espeak-ng speech against music; a Karplus-Strong string
against a sawtooth driven into a clipper; a drum machine groove against a pad with no attacks;
a loud, dense, clipped wall against a few quiet plucks; the same take dry and with a hall and
an audience added; a major piece at 120 BPM against a slow minor progression. Each score is
asserted on the far side of a third of its range, as Spotify's own reading guides put it
(speechiness >= 0.66 is "probably made entirely of spoken words").
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from analysis import Analysis, analyze_file
from analysis.perceptual import (
    SCORE_METHODS,
    SCORE_NAMES,
    beat_strength,
    dfa_exponent,
    local_pulse,
)
from analysis.schema import ResultScores
from tests.analysis import perceptual_signals as ps
from tests.analysis.signals import write

HIGH, LOW = 0.66, 0.33
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RENDERED: dict[str, Callable[[], np.ndarray]] = {
    "groove": ps.drum_groove,
    "cymbal_groove": ps.cymbal_groove,
    "pad": ps.pad,
    "plucked": ps.plucked,
    "distorted": ps.distorted_synth,
    "noise_rock": ps.noise_rock,
    "quiet_sparse": ps.quiet_sparse,
    "live": lambda: ps.live(ps.plucked()),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ResultScores]:
    folder = tmp_path_factory.mktemp("perceptual")
    return {
        name: _scores(analyze_file(write(folder / f"{name}.wav", make(), ps.SR)))
        for name, make in RENDERED.items()
    }


@pytest.fixture(scope="module")
def speech() -> Analysis:
    return analyze_file(SAMPLES / "speech_espeak.ogg")


def _scores(analysis: Analysis) -> ResultScores:
    return analysis.document["summary"]["scores"]


def test_espeak_speech_is_speech_and_not_instrumental(speech: Analysis) -> None:
    scores = _scores(speech)
    assert scores["speechiness"] is not None and scores["speechiness"] >= HIGH
    assert scores["instrumentalness"] is not None and scores["instrumentalness"] <= LOW
    # A voice's intonation is no key: valence has no harmony to read.
    assert scores["valence"] is None


def test_speech_reads_the_same_in_the_fast_profile() -> None:
    # MFCC from 64 mel bands are ~1/sqrt(2) of those from 128: the scale is corrected.
    scores = _scores(analyze_file(SAMPLES / "speech_espeak.ogg", profile="fast"))
    assert scores["speechiness"] is not None and scores["speechiness"] >= HIGH


@pytest.mark.parametrize("clip", ["click120_cmajor.flac", "aminor_progression.mp3", "sine440.opus"])
def test_sample_music_is_not_speech(clip: str) -> None:
    scores = _scores(analyze_file(SAMPLES / clip))
    assert scores["speechiness"] is not None and scores["speechiness"] <= LOW
    # No speech found, and no sung-voice detector: instrumentalness has no evidence.
    assert scores["instrumentalness"] is None


@pytest.mark.parametrize("name", list(RENDERED))
def test_rendered_music_is_not_speech(rendered: dict[str, ResultScores], name: str) -> None:
    speechiness = rendered[name]["speechiness"]
    assert speechiness is not None and speechiness <= LOW


def _high_low(rendered: dict[str, ResultScores], score: str, high: str, low: str) -> None:
    hi, lo = rendered[high][score], rendered[low][score]  # type: ignore[literal-required]
    assert hi is not None and lo is not None
    assert hi >= HIGH and lo <= LOW, f"{score}: {high} {hi}, {low} {lo}"


def test_a_plucked_string_is_acoustic_and_a_clipped_synth_is_not(
    rendered: dict[str, ResultScores],
) -> None:
    _high_low(rendered, "acousticness", "plucked", "distorted")


def test_a_steady_groove_is_danceable_and_a_free_pad_is_not(
    rendered: dict[str, ResultScores],
) -> None:
    _high_low(rendered, "danceability", "groove", "pad")


def test_a_loud_dense_wall_is_energetic_and_quiet_plucks_are_not(
    rendered: dict[str, ResultScores],
) -> None:
    _high_low(rendered, "energy", "noise_rock", "quiet_sparse")


def test_an_audience_and_a_hall_make_a_take_live(rendered: dict[str, ResultScores]) -> None:
    _high_low(rendered, "liveness", "live", "plucked")


def test_cymbals_on_the_beat_are_no_audience(rendered: dict[str, ResultScores]) -> None:
    # A ride cymbal ringing over the groove is as noisy and uneven as applause, but its onsets
    # keep the beat: without the pulse test it read 20 s of crowd (liveness 1.0).
    assert rendered["cymbal_groove"]["liveness"] == 0.0


def test_steady_noise_is_no_audience(tmp_path: Path) -> None:
    # Broadband like applause, but with a steady level: hiss, wind, a noise synth.
    noise = 0.2 * np.random.default_rng(7).standard_normal(10 * ps.SR).astype(np.float32)
    scores = _scores(analyze_file(write(tmp_path / "noise.wav", noise, ps.SR)))
    assert scores["liveness"] == 0.0


def test_major_at_120_bpm_is_positive_and_a_slow_minor_progression_is_not() -> None:
    major = _scores(analyze_file(SAMPLES / "click120_cmajor.flac"))["valence"]
    minor = _scores(analyze_file(SAMPLES / "aminor_progression.flac"))["valence"]
    assert major is not None and minor is not None
    assert major >= HIGH and minor <= LOW


def test_silence_has_no_evidence_for_any_score(tmp_path: Path) -> None:
    scores = _scores(analyze_file(write(tmp_path / "silence.wav", np.zeros(5 * ps.SR), ps.SR)))
    assert scores == dict.fromkeys(SCORE_NAMES)


def test_scores_are_in_range_and_named_as_the_schema(rendered: dict[str, ResultScores]) -> None:
    assert set(SCORE_METHODS) == set(typing.get_type_hints(ResultScores))
    for scores in rendered.values():
        assert set(scores) == set(SCORE_NAMES)
        values = [scores[name] for name in SCORE_NAMES]  # type: ignore[literal-required]
        assert all(v is None or 0.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize("seed", [0, 1])
def test_dfa_exponent_of_noise_and_its_running_sum(seed: int) -> None:
    # Theory: uncorrelated noise has a DFA exponent of 0.5, its running sum (a random walk) 1.5.
    hop_s = 512 / 22050
    white = np.random.default_rng(seed).standard_normal(20000)
    assert dfa_exponent(white, hop_s) == pytest.approx(0.5, abs=0.07)
    assert dfa_exponent(np.cumsum(white), hop_s) == pytest.approx(1.5, abs=0.07)


def test_dfa_exponent_of_a_periodic_envelope_is_low() -> None:
    # Above its period a repeating envelope stops fluctuating more: the exponent falls.
    hop_s = 512 / 22050
    t = np.arange(20000) * hop_s
    pulses = (np.mod(t, 0.5) < 0.05).astype(float)
    alpha = dfa_exponent(pulses, hop_s)
    assert alpha is not None and alpha < 0.3
    assert dfa_exponent(np.ones(40), hop_s) is None


def test_local_pulse_of_a_beat_and_of_random_onsets() -> None:
    # Onsets every 0.5 s repeat at a beat lag; onsets at random times do not.
    hop_s = 512 / 22050
    rng = np.random.default_rng(5)
    beat = np.zeros(3000)
    beat[:: round(0.5 / hop_s)] = 1.0
    random = np.zeros(3000)
    random[rng.choice(3000, 140, replace=False)] = 1.0
    assert np.min(local_pulse(beat, hop_s)) > 0.8
    assert np.max(local_pulse(random, hop_s)) < 0.4
    assert local_pulse(beat, hop_s).shape == beat.shape


def test_beat_strength_of_onsets_every_beat_and_of_noise() -> None:
    # An envelope that repeats exactly every beat correlates fully with itself one beat later;
    # white noise does not correlate with itself at any lag.
    hop_s = 512 / 22050
    beat_frames = 25  # 0.58 s: 103.4 BPM
    env = np.tile(np.r_[1.0, 0.5, np.zeros(beat_frames - 2)], 400)
    bpm = 60.0 / (beat_frames * hop_s)
    assert beat_strength(env, bpm, hop_s) == pytest.approx(1.0, abs=0.01)
    noise = np.random.default_rng(3).random(10000)
    assert beat_strength(noise, bpm, hop_s) < 0.05
    assert beat_strength(env, 0.0, hop_s) == 0.0
