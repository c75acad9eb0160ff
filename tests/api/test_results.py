"""GET /v1/analyses/{id}/result: the stored files, cache headers, and every not-a-result state."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import finish, runtime_of, upload
from tests.api.test_analyses import assert_problem

IMMUTABLE = "private, max-age=31536000, immutable"


@pytest.fixture
def done(client: TestClient) -> dict:
    job = upload(client, filename='Ünïcode take "3".wav').json()
    finish(client, job["id"], document={"bpm": 120.0, "key": "C major"})
    return client.get(f"/v1/analyses/{job['id']}").json()


def test_succeeded_job_links_to_its_result(done: dict) -> None:
    base = f"/v1/analyses/{done['id']}"
    assert done["status"] == "succeeded"
    assert done["links"] == {
        "self": base,
        "result": f"{base}/result",
        "csv": f"{base}/result?format=csv",
        "npz": f"{base}/result?format=npz",
        "waveform": f"{base}/waveform.json",
        "spectrogram": f"{base}/spectrogram.png",
        "audio": f"{base}/audio",
        "audio_features": f"{base}/audio-features",
        "audio_analysis": f"{base}/audio-analysis",
    }


@pytest.mark.parametrize(
    ("fmt", "media_type", "extension", "content"),
    [
        ("json", "application/json", "json", json.dumps({"bpm": 120.0, "key": "C major"})),
        ("csv", "text/csv; charset=utf-8", "csv", "time_s,rms\n0.0,0.5\n"),
        ("npz", "application/zip", "npz", "PK\x03\x04 not really an npz"),
    ],
)
def test_result_formats(
    client: TestClient, done: dict, fmt: str, media_type: str, extension: str, content: str
) -> None:
    r = client.get(f"/v1/analyses/{done['id']}/result", params={"format": fmt})
    assert r.status_code == 200
    assert r.headers["content-type"] == media_type
    assert r.content == content.encode()
    assert r.headers["content-length"] == str(len(content))
    assert r.headers["cache-control"] == IMMUTABLE
    assert r.headers["content-disposition"] == (
        f'attachment; filename="Unicode take _3_.{extension}"; '
        f"filename*=UTF-8''%C3%9Cn%C3%AFcode%20take%20%223%22.{extension}"
    )


def test_default_format_is_json(client: TestClient, done: dict) -> None:
    assert client.get(done["links"]["result"]).json() == {"bpm": 120.0, "key": "C major"}


def test_etag_and_if_none_match(client: TestClient, done: dict) -> None:
    url = done["links"]["result"]
    first = client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert client.get(done["links"]["csv"]).headers["etag"] != etag

    cached = client.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    for header in (f'"other", W/{etag}', "*"):
        assert client.get(url, headers={"If-None-Match": header}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200


def test_result_while_queued_or_running_is_409(client: TestClient) -> None:
    job = upload(client).json()
    url = f"/v1/analyses/{job['id']}/result"
    assert_problem(client.get(url), 409, "not_finished")
    runtime_of(client).jobs.mark_running(job["id"])
    body = assert_problem(client.get(url, params={"format": "csv"}), 409, "not_finished")
    assert "running" in body["detail"]


def test_result_of_failed_job_carries_its_error(client: TestClient) -> None:
    job = upload(client).json()
    jobs = runtime_of(client).jobs
    jobs.mark_running(job["id"])
    jobs.mark_failed(job["id"], code="invalid_audio", message="no audio stream in file")
    body = assert_problem(client.get(f"/v1/analyses/{job['id']}/result"), 409, "job_failed")
    assert body["error"] == {"code": "invalid_audio", "message": "no audio stream in file"}
    got = client.get(f"/v1/analyses/{job['id']}").json()
    assert got["error"] == {"code": "invalid_audio", "message": "no audio stream in file"}
    assert got["links"]["result"] is None


def test_result_of_canceled_job_is_409(client: TestClient) -> None:
    job = upload(client).json()
    client.delete(f"/v1/analyses/{job['id']}")
    assert_problem(client.get(f"/v1/analyses/{job['id']}/result"), 409, "job_canceled")


def test_bad_format_is_422(client: TestClient, done: dict) -> None:
    r = client.get(done["links"]["result"], params={"format": "xml"})
    assert_problem(r, 422, "invalid_request")
