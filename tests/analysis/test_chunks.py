"""The chunked path (plan, analyse chunks, merge) against the single pass on one long signal.

Tolerances are those docs/result.md ("Chunked analysis") promises.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from analysis import Analysis, analyze_file
from analysis.chunks import (
    ChunkPlan,
    Partial,
    analyze_chunk,
    analyze_file_chunked,
    merge,
    plan_chunks,
)
from analysis.decode import open_audio
from analysis.errors import UnreadableAudio
from analysis.export import frames_to_csv, frames_to_npz
from analysis.features import SERIES
from analysis.limits import Limits
from tests.analysis.structure_signals import medley

SR = 44100
BPM = 100.0
SECONDS = 180.0
CHUNK_S = 50.0  # 180 s in chunks of 50 s: 4 chunks, seams at 50, 100 and 150 s


def c_major_clicks(path: Path, rng: np.random.Generator) -> Path:
    """Three minutes of noise clicks at 100 BPM over a C major triad, stereo 44.1 kHz.

    Stereo at 44.1 kHz so the chunks go through the resampler and the multichannel meter,
    like most real uploads.
    """
    t = np.arange(int(SECONDS * SR)) / SR
    y = np.zeros_like(t)
    for hz, amplitude in ((130.81, 0.06), (261.63, 0.1), (329.63, 0.08), (392.0, 0.08)):
        y += amplitude * np.sin(2 * np.pi * hz * t)
    step = round(SR * 60.0 / BPM)
    for start in range(0, y.size, step):
        n = min(300, y.size - start)
        y[start : start + n] += 0.6 * np.hanning(300)[:n] * rng.uniform(-1, 1, n)
    stereo = np.stack([y, 0.9 * y], axis=1).astype(np.float32)
    subtype = "VORBIS" if path.suffix == ".ogg" else "PCM_16"
    with sf.SoundFile(path, "w", SR, 2, subtype) as out:
        # In pieces: libsndfile's Vorbis encoder crashes on one three-minute write.
        for start in range(0, stereo.shape[0], 65536):
            out.write(stereo[start : start + 65536])
    return path


# WAV seeks through libsndfile; Ogg Vorbis through FFmpeg, whose seeks land on Ogg pages and
# whose frames carry positions the chunk must cut by.
@pytest.fixture(scope="module", params=["wav", "ogg"])
def long_file(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    rng = np.random.default_rng(20240601)
    return c_major_clicks(tmp_path_factory.mktemp("chunks") / f"long.{request.param}", rng)


@pytest.fixture(scope="module")
def single(long_file: Path) -> Analysis:
    return analyze_file(long_file)


@pytest.fixture(scope="module")
def chunked(long_file: Path) -> Analysis:
    return analyze_file_chunked(long_file, chunk_s=CHUNK_S)


def test_plan_splits_into_chunks_of_about_chunk_s(long_file: Path) -> None:
    with open_audio(long_file, limits=Limits()) as source:
        plan = plan_chunks(source.info, chunk_s=CHUNK_S)
    assert plan.count == 4
    spans = [plan.span(i) for i in range(plan.count)]
    # Frames and loudness steps tile the file: each chunk ends where the next begins.
    assert spans[0].first_frame == 0 and spans[0].first_step == 0
    for a, b in itertools.pairwise(spans):
        assert a.end_frame == b.first_frame
        assert a.end_step == b.first_step
    assert spans[-1].end_frame is None and spans[-1].end_step is None
    assert ChunkPlan.from_dict(plan.to_dict()) == plan


def test_plan_keeps_a_short_file_whole_and_refuses_unknown_length(long_file: Path) -> None:
    with open_audio(long_file, limits=Limits()) as source:
        info = source.info
    assert plan_chunks(info, chunk_s=150.0).count == 1
    with pytest.raises(ValueError, match="no length"):
        plan_chunks(
            type(info)(info.sample_rate, info.channels, None, info.format, info.codec),
            chunk_s=CHUNK_S,
        )


def test_tempo_key_and_loudness_match_the_single_pass(single: Analysis, chunked: Analysis) -> None:
    a, b = single.document["summary"], chunked.document["summary"]
    assert a["tempo"]["bpm"] == pytest.approx(BPM, abs=1.0)
    assert b["tempo"]["bpm"] == pytest.approx(a["tempo"]["bpm"], abs=1.0)
    assert (b["key"]["tonic"], b["key"]["mode"]) == ("C", "major")
    assert (b["key"]["tonic"], b["key"]["mode"]) == (a["key"]["tonic"], a["key"]["mode"])
    for name in ("integrated_lufs", "loudness_range_lu", "peak_dbfs"):
        assert b["loudness"][name] == pytest.approx(a["loudness"][name], abs=0.1), name
    assert b["loudness"]["clipping_ratio"] == pytest.approx(a["loudness"]["clipping_ratio"])


def test_beats_match_within_one_frame(single: Analysis, chunked: Analysis) -> None:
    a = np.asarray(single.document["summary"]["beats_s"])
    b = np.asarray(chunked.document["summary"]["beats_s"])
    # Beats are tracked on the merged envelope, so there is no seam to forgive.
    assert a.size == b.size > 0.9 * SECONDS * BPM / 60.0
    assert np.max(np.abs(a - b)) <= single.hop_s


def test_frames_are_the_single_pass_frames(single: Analysis, chunked: Analysis) -> None:
    assert chunked.document["frames"] == single.document["frames"]
    assert chunked.document["audio"] == single.document["audio"]
    for name, values in single.frames.items():
        assert chunked.frames[name].shape == values.shape, name
        if name == "spectral_rolloff_hz":
            # The roll-off is a bin: float32 rounding may tip a frame at the 85% line over.
            flipped = chunked.frames[name] != values
            assert np.mean(flipped) < 1e-3
            assert np.max(np.abs(chunked.frames[name] - values)) <= 22050 / 2048 + 1e-3
            continue
        scale = float(np.max(np.abs(values))) or 1.0
        # Same samples, same frames: float32 rounding apart (the STFT is batched differently).
        np.testing.assert_allclose(chunked.frames[name], values, rtol=1e-3, atol=1e-5 * scale)


def test_summary_means_within_one_percent(single: Analysis, chunked: Analysis) -> None:
    a, b = single.document["summary"], chunked.document["summary"]
    names = [
        "rms",
        "zero_crossing_rate",
        "spectral_centroid_hz",
        "spectral_bandwidth_hz",
        "spectral_rolloff_hz",
        "spectral_flatness",
    ]
    for name in names:
        assert b[name]["mean"] == pytest.approx(a[name]["mean"], rel=0.01), name
    for name in ("mfcc", "spectral_contrast_db", "chroma"):
        np.testing.assert_allclose(b[name]["mean"], a[name]["mean"], rtol=0.01, atol=1e-3)
    assert b["onset_rate_per_s"] == pytest.approx(a["onset_rate_per_s"], rel=0.01)
    assert b["silence_ratio"] == pytest.approx(a["silence_ratio"], abs=1e-6)


def test_partials_survive_a_round_trip_and_merge_in_any_order(long_file: Path) -> None:
    with open_audio(long_file, limits=Limits()) as source:
        plan = plan_chunks(source.info, chunk_s=CHUNK_S)
    partials = [Partial.from_bytes(analyze_chunk(long_file, plan, i).to_bytes()) for i in (3, 1)]
    partials += [analyze_chunk(long_file, plan, i) for i in (2, 0)]
    merged = merge(plan, partials, sha256="0" * 64)
    assert merged.document["frames"]["count"] == sum(p.series["rms"].size for p in partials)
    # A partial stored before chunks formatted their CSV rows has none: the merge formats
    # them, and frames.csv is the same.
    assert all(p.csv_rows for p in partials)
    assert Partial.from_bytes(partials[2].to_bytes()).csv_rows == partials[2].csv_rows
    older = merge(plan, [replace(p, csv_rows=None) for p in partials], sha256="0" * 64)
    assert frames_to_csv(older) == frames_to_csv(merged)
    for p in partials:  # per-frame chroma and MFCC tile the same frames as the series
        assert p.matrices["chroma"].shape == (12, p.series["rms"].size)
        assert p.matrices["mfcc"].shape == (20, p.series["rms"].size)
    with pytest.raises(ValueError, match="not chunks"):
        merge(plan, partials[:3], sha256="0" * 64)


def test_chunk_past_the_real_end_is_unreadable(long_file: Path) -> None:
    # A header that claims twice the real length: a chunk running past the real end fails.
    with open_audio(long_file, limits=Limits()) as source:
        info = source.info
    assert info.frames is not None
    lying = type(info)(info.sample_rate, info.channels, 2 * info.frames, info.format, info.codec)
    plan = plan_chunks(lying, chunk_s=CHUNK_S)
    with pytest.raises(UnreadableAudio, match="ended"):
        analyze_chunk(long_file, plan, 3)  # 150..200 s of a 180 s file


def test_clipped_samples_at_the_seams_count_once(tmp_path: Path) -> None:
    # 30 s of quiet stereo in chunks of 10 s: clipped samples on both sides of each seam and
    # inside the 1 s a chunk decodes before its span, where a chunk must not count them again.
    sr = 44100
    y = np.tile(0.3 * np.sin(2 * np.pi * 220.0 * np.arange(30 * sr) / sr), (2, 1)).T
    y = y.astype(np.float32)
    clipped = []
    for seam_s in (10.0, 20.0):
        seam = int(seam_s * sr)
        clipped += [seam - 1, seam, seam + 1, seam - sr // 2, seam - sr + 3, seam + sr // 2]
    clipped += [0, y.shape[0] - 1]
    for i, n in enumerate(clipped):
        y[n, i % 2] = 1.0 if i % 3 else -1.0
    path = tmp_path / "rails.wav"
    sf.write(path, y, sr, subtype="FLOAT")
    chunked = analyze_file_chunked(path, chunk_s=10.0, overlap_s=1.0)
    loudness = chunked.document["summary"]["loudness"]
    assert loudness["clipping_ratio"] == round(len(clipped) / y.size, 8)
    assert loudness["peak_dbfs"] == 0.0


def _structure_agrees(single: Analysis, chunked: Analysis) -> None:
    """The structure fields within the tolerances docs/result.md ("Chunked analysis") states."""
    a, b = single.document["summary"], chunked.document["summary"]
    hop = single.hop_s
    assert b["meter"]["beats_per_bar"] == a["meter"]["beats_per_bar"]
    assert b["meter"]["confidence"] == pytest.approx(a["meter"]["confidence"], abs=0.05)
    for name in ("downbeats_s", "tatums_s"):
        assert len(b[name]) == len(a[name]), name
        np.testing.assert_allclose(b[name], a[name], atol=hop + 1e-4)
    assert b["beat_positions"] == a["beat_positions"]
    assert [s["label"] for s in b["sections"]] == [s["label"] for s in a["sections"]]
    for x, y in zip(a["sections"], b["sections"], strict=True):
        assert y["start_s"] == pytest.approx(x["start_s"], abs=hop + 1e-4)
        assert y["loudness_lufs"] == pytest.approx(x["loudness_lufs"], abs=0.1)
        assert y["tempo_bpm"] == pytest.approx(x["tempo_bpm"], abs=1.0)
        assert (y["key"]["tonic"], y["key"]["mode"]) == (x["key"]["tonic"], x["key"]["mode"])
    for name in ("end_of_fade_in_s", "start_of_fade_out_s"):
        assert b["fade"][name] == pytest.approx(a["fade"][name], abs=hop + 1e-4)
    starts_a = np.array([s["start_s"] for s in single.segments])
    starts_b = np.array([s["start_s"] for s in chunked.segments])
    assert abs(starts_a.size - starts_b.size) <= max(1, starts_a.size // 100)
    if starts_a.size == starts_b.size:
        np.testing.assert_allclose(starts_b, starts_a, atol=hop + 1e-4)


def test_structure_of_the_long_file_matches_the_single_pass(
    single: Analysis, chunked: Analysis
) -> None:
    _structure_agrees(single, chunked)


def test_structure_of_a_medley_matches_the_single_pass(tmp_path: Path) -> None:
    # Seams at 20, 40 and 60 s, joins at 25 and 50 s: no seam falls on a section boundary.
    y, _ = medley()
    path = tmp_path / "medley.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    single = analyze_file(path)
    chunked = analyze_file_chunked(path, chunk_s=20.0)
    assert len(single.document["summary"]["sections"]) == 3
    _structure_agrees(single, chunked)


def test_frames_files_of_the_chunks_are_those_of_the_merged_series(chunked: Analysis) -> None:
    # frames.csv joined from the rows each chunk formatted, and frames.npz compressed during
    # the merge, are the bytes export makes from the merged series at once ...
    assert len(chunked.csv_rows) == 4 and chunked.npz is not None
    at_once = replace(chunked, csv_rows=(), npz=None)
    assert frames_to_csv(chunked) == frames_to_csv(at_once)
    assert frames_to_npz(chunked) == frames_to_npz(at_once)
    # ... and hold the frames: one row per frame, frame i at i * hop (512 / 22050 s), seams
    # at 50, 100 and 150 s included.
    rows = list(csv.reader(io.StringIO(frames_to_csv(chunked).decode("utf-8"))))
    assert rows[0] == ["time_s", *SERIES]
    table = np.array(rows[1:], dtype=np.float64)
    n = chunked.document["frames"]["count"]
    assert table.shape == (n, 1 + len(SERIES))
    np.testing.assert_allclose(table[:, 0], np.arange(n) * 512 / 22050, rtol=1e-6)
    for j, name in enumerate(SERIES, start=1):
        # %.7g: seven significant digits of each float32 value.
        np.testing.assert_allclose(table[:, j], chunked.frames[name], rtol=1e-6, atol=1e-30)
    with np.load(io.BytesIO(frames_to_npz(chunked))) as npz:
        np.testing.assert_array_equal(npz["time_s"], np.arange(n) * (512 / 22050))
        for name in SERIES:
            np.testing.assert_array_equal(npz[name], chunked.frames[name])
