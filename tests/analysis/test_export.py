"""Frame exports: what a spreadsheet or numpy user downloads."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analysis import Analysis, analyze_file
from analysis.export import frames_to_csv, frames_to_npz, segments_to_json


@pytest.fixture(scope="module")
def analysis(request: pytest.FixtureRequest) -> Analysis:
    return analyze_file(Path(request.config.rootpath) / "samples" / "sine440.ogg")


def test_csv_has_time_then_every_series(analysis: Analysis):
    rows = list(csv.reader(io.StringIO(frames_to_csv(analysis).decode("utf-8"))))
    assert rows[0] == ["time_s", *analysis.document["frames"]["names"]]
    assert len(rows) - 1 == analysis.document["frames"]["count"]
    assert float(rows[2][0]) == pytest.approx(analysis.hop_s, rel=1e-6)
    centroid = rows[0].index("spectral_centroid_hz")
    middle = rows[len(rows) // 2]
    assert float(middle[centroid]) == pytest.approx(440.0, rel=0.05)


def test_npz_round_trips_the_series(analysis: Analysis):
    with np.load(io.BytesIO(frames_to_npz(analysis))) as npz:
        assert float(npz["hop_s"]) == analysis.hop_s
        assert npz["time_s"].shape == analysis.frames["rms"].shape
        for name, series in analysis.frames.items():
            assert npz[name].dtype == np.float32
            np.testing.assert_array_equal(npz[name], series)


def test_segments_json_writes_numpy_numbers_as_plain_ones(analysis: Analysis):
    segment = {
        "start_s": np.float64(0.5),
        "duration_s": np.float32(0.25),
        "count": np.int64(3),
        "pitches": np.array([1.0, 0.5], dtype=np.float32),
        "timbre": (np.float64(-2.5), 1.0),
    }
    text = segments_to_json(replace(analysis, segments=[segment])).decode()
    assert text == (
        '[{"start_s":0.5,"duration_s":0.25,"count":3,"pitches":[1.0,0.5],"timbre":[-2.5,1.0]}]'
    )
    assert json.loads(segments_to_json(analysis)) == analysis.segments
