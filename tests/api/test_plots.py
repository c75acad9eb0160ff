"""Plot endpoints and the web page on the real app (SQLite, local blobs, filesystem:// broker)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from core.names import (
    RENDER_ERROR_JSON,
    RENDER_TASK,
    SPECTROGRAM_PNG,
    WAVEFORM_JSON,
    WEBHOOK_TASK,
    result_prefix,
)
from tests.api.conftest import finish, queued_messages, runtime_of, upload
from tests.api.test_analyses import assert_problem

PEAKS = {
    "version": 2,
    "channels": 1,
    "sample_rate": 22050,
    "samples_per_pixel": 220,
    "bits": 8,
    "length": 2,
    "data": [-128, 127, -3, 4],
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PLOTS = [("waveform.json", "application/json"), ("spectrogram.png", "image/png")]


@pytest.fixture
def done(client: TestClient) -> str:
    job_id: str = upload(client).json()["id"]
    finish(client, job_id, document={"summary": {"beats_s": []}})
    return job_id


def draw(client: TestClient, job_id: str) -> None:
    """Store the plots as the render task does."""
    blobs = runtime_of(client).blobs
    blobs.put_bytes(result_prefix(job_id) + SPECTROGRAM_PNG, PNG)
    blobs.put_bytes(result_prefix(job_id) + WAVEFORM_JSON, json.dumps(PEAKS).encode())


@pytest.mark.parametrize(("name", "media_type"), PLOTS)
def test_a_drawn_plot_is_served_immutable_with_an_etag(
    client: TestClient, done: str, name: str, media_type: str
) -> None:
    draw(client, done)
    response = client.get(f"/v1/analyses/{done}/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    etag = response.headers["etag"]
    expected = json.dumps(PEAKS).encode() if name == "waveform.json" else PNG
    assert response.content == expected

    again = client.get(f"/v1/analyses/{done}/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = client.get(f"/v1/analyses/{done}/{name}", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200


@pytest.mark.parametrize(("name", "media_type"), PLOTS)
def test_a_plot_not_drawn_yet_is_pending(
    client: TestClient, done: str, name: str, media_type: str
) -> None:
    response = client.get(f"/v1/analyses/{done}/{name}")
    assert_problem(response, 409, "plot_pending")
    assert response.headers["retry-after"] == "1"


def test_a_plot_that_could_not_be_drawn_says_why(client: TestClient, done: str) -> None:
    error = {"code": "unreadable_audio", "message": "decoding failed: broken frame"}
    runtime_of(client).blobs.put_bytes(
        result_prefix(done) + RENDER_ERROR_JSON, json.dumps(error).encode()
    )
    response = client.get(f"/v1/analyses/{done}/spectrogram.png")
    assert_problem(response, 404, "plot_unavailable")
    assert "broken frame" in response.json()["detail"]
    assert response.json()["render_error"] == error
    # The result itself stays available.
    assert client.get(f"/v1/analyses/{done}/result").status_code == 200


def test_plots_of_unfinished_failed_and_unknown_jobs(client: TestClient) -> None:
    queued = upload(client).json()["id"]
    assert_problem(client.get(f"/v1/analyses/{queued}/waveform.json"), 409, "not_finished")
    runtime = runtime_of(client)
    assert runtime.jobs.mark_running(queued)
    assert runtime.jobs.mark_failed(queued, code="unreadable_audio", message="not audio")
    assert_problem(client.get(f"/v1/analyses/{queued}/waveform.json"), 409, "job_failed")
    canceled = upload(client, filename="b.wav", data=None).json()["id"]
    client.delete(f"/v1/analyses/{canceled}")
    assert_problem(client.get(f"/v1/analyses/{canceled}/spectrogram.png"), 409, "job_canceled")
    assert_problem(client.get(f"/v1/analyses/{'0' * 32}/spectrogram.png"), 404, "not_found")


def test_the_job_links_to_its_plots_and_shows_its_webhook(client: TestClient) -> None:
    created = upload(client, callback_url="https://93.184.216.34/hooks").json()
    assert created["webhook"] == {"url": "https://93.184.216.34/hooks", "deliveries": []}
    assert created["links"]["waveform"] is None
    finish(client, created["id"], document={})
    job = client.get(f"/v1/analyses/{created['id']}").json()
    assert job["links"]["waveform"] == f"/v1/analyses/{created['id']}/waveform.json"
    assert job["links"]["spectrogram"] == f"/v1/analyses/{created['id']}/spectrogram.png"
    runtime = runtime_of(client)
    stored = runtime.jobs.get(created["id"])
    attempt = {
        "attempt": 1,
        "at": "2026-11-24T11:20:04Z",
        "outcome": "failed",
        "status_class": "5xx",
    }
    runtime.jobs.set_extra(created["id"], {**stored.extra, "webhook_deliveries": [attempt]})
    shown = client.get(f"/v1/analyses/{created['id']}").json()["webhook"]["deliveries"]
    assert shown == [attempt]
    # A record from before outcomes were coarse shows no network detail.
    old = {"attempt": 2, "at": "2026-11-24T11:20:09Z", "status_code": None, "error": "Errno 111"}
    runtime.jobs.set_extra(created["id"], {**stored.extra, "webhook_deliveries": [old]})
    shown = client.get(f"/v1/analyses/{created['id']}").json()["webhook"]["deliveries"]
    assert shown == [{"attempt": 2, "at": old["at"], "outcome": "failed", "status_class": None}]
    assert upload(client, data=None, filename="c.wav").json()["webhook"] is None


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "javascript:1"])
def test_a_callback_url_must_be_http(client: TestClient, url: str) -> None:
    assert_problem(upload(client, callback_url=url), 422, "invalid_callback_url")


def test_the_web_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="file-input"' in page.text
    # The player's audio may be a blob: URL (fetched with an API key).
    assert "media-src 'self' blob:" in page.headers["content-security-policy"]
    scripts = [(name, "text/javascript") for name in ("timeline.js", "result.js", "app.js")]
    for name, media_type in [*scripts, ("style.css", "text/css")]:
        assert f"/static/{name}" in page.text
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
        again = client.get(f"/static/{name}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304


@pytest.mark.parametrize("name", ["../app.py", "missing.js", "%2e%2e%2fapp.py", "index.htm"])
def test_only_the_listed_static_files_are_served(client: TestClient, name: str) -> None:
    assert client.get(f"/static/{name}").status_code == 404


def test_the_page_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert "/v1/analyses/{job_id}/events" in paths
    assert "/v1/analyses/{job_id}/waveform.json" in paths


def webhook_messages(client: TestClient) -> list[object]:
    return [
        m["body"][0][0]  # type: ignore[index]
        for m in queued_messages(client)
        if m["headers"]["task"] == WEBHOOK_TASK  # type: ignore[index]
    ]


def test_a_cancel_queues_the_webhook(make_client: Callable[..., TestClient]) -> None:
    client = make_client(webhook_allow="127.0.0.1")
    job_id = upload(client, callback_url="http://127.0.0.1:9/hook").json()["id"]
    assert webhook_messages(client) == []
    assert client.delete(f"/v1/analyses/{job_id}").status_code == 200
    assert webhook_messages(client) == [job_id]
    # On the webhook queue (the broker names each message file after its queue), never render's.
    paths = [m["path"] for m in queued_messages(client) if m["headers"]["task"] == WEBHOOK_TASK]  # type: ignore[index]
    assert [p.name.endswith(".earshot.webhook.msg") for p in paths] == [True]  # type: ignore[attr-defined]


def test_a_result_from_cache_queues_the_webhook(make_client: Callable[..., TestClient]) -> None:
    client = make_client(webhook_allow="127.0.0.1")
    first = upload(client).json()["id"]
    finish(client, first, document={})
    again = upload(client, callback_url="http://127.0.0.1:9/hook").json()
    assert again["cached"] is True
    assert webhook_messages(client) == [again["id"]]


def render_messages(client: TestClient) -> list[object]:
    return [
        m["body"][0][0]  # type: ignore[index]
        for m in queued_messages(client)
        if m["headers"]["task"] == RENDER_TASK  # type: ignore[index]
    ]


def test_a_batch_job_is_drawn_when_a_plot_is_first_asked_for(client: TestClient) -> None:
    job_id = upload(client, priority="batch").json()["id"]
    finish(client, job_id, document={"summary": {"beats_s": []}})
    assert render_messages(client) == []
    for name, _ in PLOTS:
        assert_problem(client.get(f"/v1/analyses/{job_id}/{name}"), 409, "plot_pending")
    # Both plots come from one render; polling again queues nothing more.
    assert render_messages(client) == [job_id]
    assert "render_requested_at" in runtime_of(client).jobs.get(job_id).extra
    draw(client, job_id)
    assert client.get(f"/v1/analyses/{job_id}/spectrogram.png").status_code == 200
    assert render_messages(client) == [job_id]


def test_an_interactive_job_is_not_queued_again_by_a_plot_request(
    client: TestClient, done: str
) -> None:
    # Its render was queued by the worker when it succeeded; a poll must not add another.
    assert_problem(client.get(f"/v1/analyses/{done}/waveform.json"), 409, "plot_pending")
    assert render_messages(client) == []
