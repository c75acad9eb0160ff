"""Frame exports: what a spreadsheet or numpy user downloads."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from analysis import Analysis, analyze_file
from analysis.export import frames_to_csv, frames_to_npz


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
