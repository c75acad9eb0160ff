"""GET /v1/analyses/{id}/audio-features and /audio-analysis through the real app: a real worker
analysis of a sample with known answers, and every state in which a job has no view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from tasks.analyze import run_analysis
from tests.api.conftest import runtime_of, upload
from tests.api.test_analyses import assert_problem

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# samples/README.md: 120 BPM clicks over C - F - G - C, in C major.
CLICK = SAMPLES / "click120_cmajor.wav"
ALPHA, BETA = "alpha-key-0123456789", "beta-key-9876543210"


def _no_retry(exc: Exception) -> None:
    raise AssertionError(f"the sample must analyse at the first attempt: {exc!r}")


def analysed(client: TestClient, path: Path = CLICK, **headers: str) -> str:
    """The id of a job the real worker task analysed to the end."""
    r = upload(client, path.read_bytes(), filename=path.name, headers=headers)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    assert run_analysis(runtime_of(client), job_id, retry=_no_retry) == "succeeded"
    return job_id


def test_audio_features_of_a_finished_job(client: TestClient) -> None:
    job_id = analysed(client)
    own = f"/v1/analyses/{job_id}"
    r = client.get(f"{own}/audio-features")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    features = r.json()
    # Known by construction (samples/README.md) and from the file itself.
    info = sf.info(CLICK)
    assert features["duration_ms"] == round(info.frames / info.samplerate * 1000) == 8000
    assert (features["key"], features["mode"]) == (0, 1)  # C major
    assert features["tempo"] == pytest.approx(120, abs=2)
    document = client.get(f"{own}/result").json()
    assert features["loudness"] == document["summary"]["loudness"]["integrated_lufs"]
    assert features["type"] == "audio_features"
    assert (features["id"], features["uri"]) == (job_id, f"earshot:analysis:{job_id}")
    assert features["track_href"] == own
    assert client.get(features["track_href"]).json()["id"] == job_id
    assert client.get(features["analysis_url"]).status_code == 200
    assert features["earshot"]["analyzer_version"] == document["analyzer_version"]
    assert set(features["earshot"]["score_methods"]) == set(document["summary"]["scores"])


def test_audio_analysis_of_a_finished_job(client: TestClient) -> None:
    job_id = analysed(client)
    own = f"/v1/analyses/{job_id}"
    analysis = client.get(f"{own}/audio-analysis").json()
    document = client.get(f"{own}/result").json()
    segments = client.get(f"{own}/result", params={"format": "segments"})
    assert segments.status_code == 200
    assert segments.headers["content-type"] == "application/json"
    assert 'filename="click120_cmajor.segments.json"' in segments.headers["content-disposition"]
    stored = segments.json()
    assert [s["start"] for s in analysis["segments"]] == [round(s["start_s"], 5) for s in stored]
    assert [b["start"] for b in analysis["beats"]] == document["summary"]["beats_s"]
    # 120 BPM: a beat lasts half a second.
    durations = sorted(b["duration"] for b in analysis["beats"])
    assert durations[len(durations) // 2] == pytest.approx(0.5, abs=0.03)
    track = analysis["track"]
    assert track["duration"] == 8.0 and track["analysis_sample_rate"] == 22050
    assert (track["key"], track["mode"]) == (0, 1)
    assert analysis["meta"]["status_code"] == 0
    job = client.get(own).json()
    assert analysis["meta"]["timestamp"] is not None
    finished = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))
    assert analysis["meta"]["timestamp"] == int(finished.timestamp())


def test_views_are_immutable_with_their_own_etags(client: TestClient) -> None:
    job_id = analysed(client)
    tags = set()
    for name in ("audio-features", "audio-analysis"):
        r = client.get(f"/v1/analyses/{job_id}/{name}")
        assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
        tag = r.headers["etag"]
        again = client.get(f"/v1/analyses/{job_id}/{name}", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        tags.add(tag)
    assert len(tags) == 2


@pytest.mark.parametrize("name", ["audio-features", "audio-analysis"])
def test_no_view_before_the_job_succeeds(client: TestClient, name: str) -> None:
    job_id = upload(client).json()["id"]
    assert_problem(client.get(f"/v1/analyses/{job_id}/{name}"), 409, "not_finished")
    assert runtime_of(client).jobs.mark_running(job_id)
    body = assert_problem(client.get(f"/v1/analyses/{job_id}/{name}"), 409, "not_finished")
    assert "running" in body["detail"]
    client.delete(f"/v1/analyses/{job_id}")
    assert_problem(client.get(f"/v1/analyses/{job_id}/{name}"), 409, "job_canceled")
    unknown = "0123456789abcdef0123456789abcdef"
    assert_problem(client.get(f"/v1/analyses/{unknown}/{name}"), 404, "not_found")


def test_another_keys_analysis_is_not_found(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=f"{ALPHA},{BETA}")
    job_id = analysed(client, Authorization=f"Bearer {ALPHA}")
    for name in ("audio-features", "audio-analysis"):
        mine = client.get(
            f"/v1/analyses/{job_id}/{name}", headers={"Authorization": f"Bearer {ALPHA}"}
        )
        assert mine.status_code == 200
        theirs = client.get(
            f"/v1/analyses/{job_id}/{name}", headers={"Authorization": f"Bearer {BETA}"}
        )
        assert_problem(theirs, 404, "not_found")
        assert_problem(client.get(f"/v1/analyses/{job_id}/{name}"), 401, "unauthorized")
