"""``earshot.client.Client`` against a real service started with ``earshot dev`` (embedded).

What a notebook user does: ``Client(url).analyze(path)``, then the frame series in CSV and NPZ.
Each answer is checked against something the client did not produce: the sample's known
tempo and key (samples/README.md), its length read by soundfile, a CSV parsed with the csv
module, an NPZ opened with numpy.load.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earshot.client import ApiProblem, Client, JobFailed
from tests.integration.submit_fixtures import SAMPLES, Service, service

__all__ = ["service"]  # a fixture, imported so pytest finds it here

CLICK = SAMPLES / "click120_cmajor.flac"
WAIT_S = 300.0


def test_analyze_a_sample_then_its_frames_as_csv_and_npz(service: Service) -> None:
    with Client(service.url) as client:
        document = client.analyze(CLICK, timeout=WAIT_S)
        assert document["audio"]["duration_s"] == pytest.approx(sf.info(CLICK).duration, abs=0.05)
        assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=2)
        assert (document["summary"]["key"]["tonic"], document["summary"]["key"]["mode"]) == (
            "C",
            "major",
        )
        sha = hashlib.sha256(CLICK.read_bytes()).hexdigest()
        (job,) = [j for j in client.list(status="succeeded") if j["sha256"] == sha]
        hop_s = document["frames"]["hop_s"]

        rows = list(csv.reader(io.StringIO(client.result(job, "csv").decode())))
        assert rows[0][0] == "time_s" and len(rows[0]) > 1
        frames = len(rows) - 1
        assert abs(frames - (1 + document["audio"]["duration_s"] / hop_s)) <= 1
        with np.load(io.BytesIO(client.result(job, "npz"))) as npz:
            assert float(npz["hop_s"]) == pytest.approx(hop_s)
            assert npz["time_s"].shape == (frames,)
            assert set(npz.files) == {"hop_s", *rows[0]}


def test_analyze_reports_a_refused_upload_and_a_failed_job(
    service: Service, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_bytes(b"these are liner notes, not audio\n" * 20)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(CLICK.read_bytes()[:3000])
    copy = tmp_path / "copy.flac"
    shutil.copyfile(CLICK, copy)
    with Client(service.url) as client:
        with pytest.raises(ApiProblem) as refused:
            client.analyze(notes, timeout=WAIT_S)
        assert refused.value.status == 415
        with pytest.raises(JobFailed) as failed:
            client.analyze(cut, timeout=WAIT_S)
        job = client.get(failed.value.job["id"])
        assert job["status"] == "failed"
        assert failed.value.code == job["error"]["code"] and failed.value.message
