"""Meter, downbeats, tatums, sections, fades and segments against signals built to have them."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis import Analysis, analyze_file
from analysis.segments import rounded
from tests.analysis.signals import sine, write
from tests.analysis.structure_signals import SR, click_track, faded, medley, notes, tone


def _analyze(tmp_path: Path, name: str, y: np.ndarray, profile: str = "standard") -> Analysis:
    return analyze_file(write(tmp_path / f"{name}.wav", y, SR, subtype="FLOAT"), profile=profile)


@pytest.fixture(scope="module")
def medley_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    y, joins = medley()
    return write(tmp_path_factory.mktemp("medley") / "medley.wav", y, SR, "FLOAT"), joins


@pytest.mark.parametrize("beats_per_bar", [3, 4])
def test_click_track_gives_its_bar_length_and_downbeats(tmp_path: Path, beats_per_bar: int):
    y, downbeats = click_track(beats_per_bar)
    summary = _analyze(tmp_path, "clicks", y).document["summary"]
    assert summary["meter"]["beats_per_bar"] == beats_per_bar
    assert summary["meter"]["confidence"] > 0.8
    found = np.asarray(summary["downbeats_s"])
    # Every constructed downbeat the beat tracker reached has a downbeat within 50 ms, and
    # every downbeat found is one of them.
    beats = np.asarray(summary["beats_s"])
    reached = downbeats[(downbeats >= beats[0] - 0.05) & (downbeats <= beats[-1] + 0.05)]
    assert reached.size >= len(downbeats) - 1
    assert found.size == reached.size
    np.testing.assert_allclose(found, reached, atol=0.05)
    # Downbeats are beats in position 1, and positions count 1..n through each bar.
    positions = np.asarray(summary["beat_positions"])
    assert positions.size == beats.size
    np.testing.assert_array_equal(beats[positions == 1], found)
    assert set(np.diff(positions[positions.size % beats_per_bar :]).tolist()) <= {
        1,
        1 - beats_per_bar,
    }


@pytest.mark.parametrize(
    ("gains", "beats_per_bar"),
    [((0.8, 0.25, 0.5, 0.25), 4), ((0.8, 0.25), 2)],
    ids=["4/4 with a lighter third beat", "2/4"],
)
def test_a_strong_third_beat_is_still_a_bar_of_four(
    tmp_path: Path, gains: tuple[float, ...], beats_per_bar: int
):
    y, downbeats = click_track(len(gains), gains=gains)
    summary = _analyze(tmp_path, "clicks", y).document["summary"]
    assert summary["meter"]["beats_per_bar"] == beats_per_bar
    found = np.asarray(summary["downbeats_s"])
    assert found.size >= len(downbeats) - 1
    assert np.abs(found[:, None] - downbeats[None, :]).min(axis=1).max() <= 0.05


def test_fast_profile_finds_the_bar_too(tmp_path: Path):
    y, downbeats = click_track(3)
    summary = _analyze(tmp_path, "clicks", y, profile="fast").document["summary"]
    assert summary["meter"]["beats_per_bar"] == 3
    beats = np.asarray(summary["beats_s"])
    # The downbeats are exactly the tracked beats closest to a constructed downbeat (the
    # coarser frames of the fast profile move the beats themselves by up to two frames).
    nearest = np.abs(beats[:, None] - downbeats[None, :]).min(axis=1) < 0.1
    np.testing.assert_array_equal(summary["downbeats_s"], beats[nearest])


@pytest.mark.parametrize("profile", ["standard", "fast"])
def test_noise_has_no_meter_evidence(tmp_path: Path, profile: str):
    # White noise may get beats, but no beat is accented: the bar is the default, unconfirmed.
    # This seed's noise once read as 5 beats per bar with confidence 1 (fast profile): two
    # bars of beats passed the t test by chance.
    rng = np.random.default_rng(1)
    y = (0.3 * rng.standard_normal(10 * SR)).astype(np.float32)
    summary = _analyze(tmp_path, "noise", y, profile=profile).document["summary"]
    assert summary["meter"]["confidence"] == 0.0
    if summary["beats_s"]:
        assert summary["meter"]["beats_per_bar"] == 4
        assert summary["downbeats_s"] == summary["beats_s"][::4]


def test_tatums_divide_the_beat_as_the_hats_do(tmp_path: Path):
    for division in (2, 3):
        y, _ = click_track(4, seconds=12.0)
        period = 0.5
        hat = tone(5000.0, 0.03, decay_s=0.01)
        for t in np.arange(0.5, 11.5, period):
            for k in range(1, division):
                a = round((t + k * period / division) * SR)
                y[a : a + hat.size] += 0.2 * hat.astype(np.float32)
        summary = _analyze(tmp_path, f"hats{division}", y).document["summary"]
        beats, tatums = np.asarray(summary["beats_s"]), np.asarray(summary["tatums_s"])
        assert tatums.size == division * (beats.size - 1) + 1
        np.testing.assert_allclose(tatums[::division], beats)


def test_plain_clicks_have_the_beat_as_tatum(tmp_path: Path):
    y, _ = click_track(4, seconds=12.0)
    summary = _analyze(tmp_path, "clicks", y).document["summary"]
    assert summary["tatums_s"] == summary["beats_s"]


@pytest.mark.parametrize("profile", ["standard", "fast"])
def test_medley_sections_start_at_the_joins(medley_file: tuple[Path, list[float]], profile: str):
    path, joins = medley_file
    sections = analyze_file(path, profile=profile).document["summary"]["sections"]
    starts = [s["start_s"] for s in sections]
    assert starts[0] == 0.0 and len(sections) == 3, starts
    np.testing.assert_allclose(starts[1:], joins, atol=3.0)
    for a, b in itertools.pairwise(sections):
        assert a["end_s"] == b["start_s"]
    assert sections[-1]["end_s"] == pytest.approx(75.0, abs=0.01)
    # Three different pieces: three labels, each its own tempo and key.
    assert [s["label"] for s in sections] == ["A", "B", "C"]
    tempi = [s["tempo_bpm"] for s in sections]
    np.testing.assert_allclose(tempi, [96.0, 132.0, 110.0], atol=3.0)
    keys = [(s["key"]["tonic"], s["key"]["mode"]) for s in sections]
    assert keys == [("C", "major"), ("F#", "minor"), ("G#", "major")]


def test_section_loudness_is_bs1770_of_the_section(tmp_path: Path):
    # BS.1770-4: a 997 Hz sine at 0 dBFS in one channel reads -3.01 LUFS, so at -20 and
    # -30 dBFS it reads -23.01 and -33.01. Loud, soft, loud: two labels, the repeat shares one.
    loud, soft = 10 ** (-20 / 20), 10 ** (-30 / 20)
    y = np.concatenate([sine(997.0, 20.0, SR, a) for a in (loud, soft, loud)])
    sections = _analyze(tmp_path, "levels", y).document["summary"]["sections"]
    assert [s["label"] for s in sections] == ["A", "B", "A"]
    np.testing.assert_allclose([s["start_s"] for s in sections], [0.0, 20.0, 40.0], atol=1.0)
    # A section's edges hold a little of its neighbours (and their filter transients).
    np.testing.assert_allclose(
        [s["loudness_lufs"] for s in sections], [-23.01, -33.01, -23.01], atol=0.3
    )
    assert all(s["tempo_bpm"] == 0.0 for s in sections)


@pytest.mark.parametrize("profile", ["standard", "fast"])
def test_segments_start_at_the_notes_with_their_pitch(tmp_path: Path, profile: str):
    played = [0, 4, 7, 11, 2, 5, 9, 1]
    y, starts = notes(played)
    analysis = _analyze(tmp_path, "notes", y, profile=profile)
    segments = analysis.segments
    # The leading silence is a segment of its own; then one per note.
    assert segments[0]["start_s"] == 0.0 and segments[0]["loudness_start_db"] < -60.0
    assert len(segments) == len(played) + 1
    found = np.array([s["start_s"] for s in segments[1:]])
    # The onset detector reports the frame after the attack: one frame plus 30 ms.
    np.testing.assert_allclose(found, starts, atol=analysis.hop_s + 0.03)
    assert [int(np.argmax(s["pitches"])) for s in segments[1:]] == played
    for s, nxt in itertools.pairwise(segments):
        assert s["start_s"] + s["duration_s"] == pytest.approx(nxt["start_s"], abs=1e-4)
        assert s["loudness_end_db"] == nxt["loudness_start_db"]
    for s in segments:
        assert len(s["pitches"]) == 12 and len(s["timbre"]) == 12
        assert max(s["pitches"]) == 1.0 and min(s["pitches"]) >= 0.0
        assert s["loudness_max_db"] >= s["loudness_start_db"]
        assert 0.0 <= s["loudness_max_time_s"] < s["duration_s"]
        assert 0.0 <= s["confidence"] <= 1.0
    # A note's decay: the loudest point is at its attack, tens of dB above the silence.
    assert all(s["loudness_max_db"] > -20.0 for s in segments[1:])
    # segments.json is plain JSON, and plain floats (segments_to_json walks no numpy).
    assert json.loads(json.dumps(segments)) == segments
    assert {type(v) for s in segments for v in [*s.values(), *s["pitches"], *s["timbre"]]} == {
        float,
        list,
    }


def test_fades_are_found_where_they_were_made(tmp_path: Path):
    y = faded(seconds=20.0, fade_in_s=4.0, fade_out_s=6.0)
    fade = _analyze(tmp_path, "faded", y).document["summary"]["fade"]
    assert fade["end_of_fade_in_s"] == pytest.approx(4.0, abs=0.5)
    assert fade["start_of_fade_out_s"] == pytest.approx(14.0, abs=0.5)


def test_no_fade_reads_the_start_and_the_end(tmp_path: Path):
    y = faded(seconds=20.0, fade_in_s=0.0, fade_out_s=0.0)
    fade = _analyze(tmp_path, "abrupt", y).document["summary"]["fade"]
    assert fade == {"end_of_fade_in_s": 0.0, "start_of_fade_out_s": 20.0}


def _all_numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in _all_numbers(v)]
    if isinstance(value, list):
        return [f for v in value for f in _all_numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) else []


@pytest.mark.parametrize("seconds", [3.0, 0.05])
def test_silence_and_very_short_files_have_no_grid(tmp_path: Path, seconds: float):
    analysis = _analyze(tmp_path, "silence", np.zeros(int(seconds * SR), np.float32))
    summary = analysis.document["summary"]
    assert summary["meter"] == {"beats_per_bar": 0, "confidence": 0.0}
    assert summary["downbeats_s"] == summary["beat_positions"] == summary["tatums_s"] == []
    (section,) = summary["sections"]
    assert (section["start_s"], section["end_s"]) == (0.0, pytest.approx(seconds, abs=1e-3))
    assert section["loudness_lufs"] == -70.0 and section["tempo_bpm"] == 0.0
    assert summary["fade"] == {"end_of_fade_in_s": 0.0, "start_of_fade_out_s": seconds}
    assert len(analysis.segments) == 1
    numbers = _all_numbers([summary, analysis.segments])
    assert numbers and all(math.isfinite(v) for v in numbers)


@pytest.mark.parametrize("digits", [0, 3, 4, 5])
def test_rounded_is_pythons_round_bit_for_bit(digits: int):
    rng = np.random.default_rng(15)
    ties = (rng.integers(-(10**6), 10**6, 5000) + 0.5) / 10**digits  # at or next to a half
    values = np.concatenate(
        [
            rng.normal(0.0, 1.0, 5000),
            rng.normal(0.0, 100.0, 5000),
            ties,
            np.nextafter(ties, np.inf),
            np.nextafter(ties, -np.inf),
            [0.0, -0.0, -1e-9, 2.675, 0.125, -2.5, 1e300, 2.0**60, np.inf, -np.inf],
        ]
    )
    expected = np.array([round(float(v), digits) for v in values])
    # The same doubles, signed zeros included.
    np.testing.assert_array_equal(rounded(values, digits).view(np.int64), expected.view(np.int64))
    assert np.isnan(rounded(np.array([np.nan]), digits)).all()
