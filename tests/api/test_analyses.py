"""POST/GET/DELETE /v1/analyses against a real runtime: SQLite, local blobs, filesystem broker."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from core.names import JobStatus, upload_key
from tests.api.conftest import (
    finish,
    queued_messages,
    runtime_of,
    stored_uploads,
    upload,
    wav_bytes,
)

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://earshot.dev/problems/{code}"
    assert body["title"] and body["detail"]
    return body


def test_upload_queues_a_job_with_only_its_id_on_the_broker(client: TestClient) -> None:
    data = wav_bytes()
    r = upload(client, data, headers={"X-Request-ID": "req-42"}, profile="fast", priority="batch")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/analyses/{job['id']}"
    assert r.headers["x-request-id"] == "req-42"
    assert job["status"] == "queued"
    assert job["profile"] == "fast"
    assert job["priority"] == "batch"
    assert job["size_bytes"] == len(data)
    assert job["sha256"] == hashlib.sha256(data).hexdigest()
    assert job["filename"] == "take 1.wav"
    assert job["cached"] is False
    assert job["links"]["self"] == f"/v1/analyses/{job['id']}"
    assert job["links"]["result"] is None

    runtime = runtime_of(client)
    assert runtime.blobs.get_bytes(upload_key(job["id"])) == data
    assert runtime.jobs.get(job["id"]).request_id == "req-42"
    [message] = queued_messages(client)
    assert message["headers"]["task"] == "earshot.analyze"  # type: ignore[index]
    args, kwargs, _embed = message["body"]  # type: ignore[misc]
    assert args == [job["id"]] and kwargs == {}
    assert str(message["path"]).endswith(".earshot.batch.msg")


def test_get_returns_the_job(client: TestClient) -> None:
    job = upload(client).json()
    r = client.get(f"/v1/analyses/{job['id']}")
    assert r.status_code == 200
    assert r.json() == job


def test_request_id_is_generated_when_absent_or_unsafe(client: TestClient) -> None:
    r = upload(client, headers={"X-Request-ID": "bad id\twith spaces"})
    generated = r.headers["x-request-id"]
    assert generated != "bad id\twith spaces" and len(generated) == 32
    assert runtime_of(client).jobs.get(r.json()["id"]).request_id == generated


def test_filename_is_sanitised_for_display(client: TestClient) -> None:
    # Raw bytes: httpx would percent-encode the control characters before they reach us.
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="../../x\x01y\x7f'
        + "\u202eé.wav".encode()
        + b'"\r\nContent-Type: audio/wav\r\n\r\n'
        + wav_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(
        "/v1/analyses",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["filename"] == "xyé.wav"


def test_oversized_upload_is_413_and_leaves_nothing(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=4000)
    r = upload(client, wav_bytes(seconds=1.0))  # 16 kB
    assert_problem(r, 413, "upload_too_large")
    assert stored_uploads(client) == []
    assert runtime_of(client).jobs.list()[0] == []
    assert queued_messages(client) == []


def test_declared_oversized_upload_is_refused_before_reading(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=1000)
    r = upload(client, wav_bytes(seconds=10.0))  # 160 kB, more than the limit plus envelope
    body = assert_problem(r, 413, "upload_too_large")
    assert "Content-Length" in body["detail"]
    assert stored_uploads(client) == []


def test_database_outage_is_503(make_client: Callable[..., TestClient]) -> None:
    # Nothing listens on port 1: a real, refused connection.
    client = make_client(database_url="postgresql+psycopg://earshot@127.0.0.1:1/earshot")
    r = client.get("/v1/analyses")
    assert_problem(r, 503, "store_unavailable")
    assert r.headers["retry-after"]


def test_chunked_upload_without_content_length_is_limited_while_streaming(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=100_000)
    boundary = "earshot-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head + wav_bytes()[:44]
        for _ in range(10):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/v1/analyses",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_problem(r, 413, "upload_too_large")
    assert stored_uploads(client) == []


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.wav", b"just some text, not audio at all\n" * 10),
        ("archive.wav", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\0" * 200),
        ("picture.wav", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\0" * 200),
        ("program.wav", b"\x7fELF\x02\x01\x01\x00" + b"\0" * 200),
        ("tiny.wav", b"RIFF"),
    ],
)
def test_non_audio_is_415_whatever_its_name(client: TestClient, name: str, data: bytes) -> None:
    r = upload(client, data, filename=name)
    assert_problem(r, 415, "unsupported_media_type")
    assert stored_uploads(client) == []
    assert queued_messages(client) == []


def test_missing_file_part_is_422(client: TestClient) -> None:
    r = client.post("/v1/analyses", data={"profile": "standard"}, files={"other": ("x", b"y")})
    assert_problem(r, 422, "invalid_request")
    r = client.post("/v1/analyses", json={"file": "x"})
    assert_problem(r, 422, "invalid_request")
    assert stored_uploads(client) == []


def test_truncated_body_is_422_and_leaves_nothing(client: TestClient) -> None:
    boundary = "cut"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    ).encode() + wav_bytes()  # no closing boundary: the connection dropped mid-file
    r = client.post(
        "/v1/analyses",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "closing boundary" in assert_problem(r, 422, "invalid_request")["detail"]
    assert stored_uploads(client) == []


def test_empty_file_is_422(client: TestClient) -> None:
    assert_problem(upload(client, b""), 422, "invalid_request")
    assert stored_uploads(client) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"profile": "ultra"},
        {"priority": "urgent"},
        {"callback_url": "ftp://example.com/hook"},
        {"callback_url": "not a url"},
    ],
)
def test_bad_form_fields_are_422_and_leave_nothing(client: TestClient, fields: dict) -> None:
    code = "invalid_callback_url" if "callback_url" in fields else "invalid_request"
    body = assert_problem(upload(client, **fields), 422, code)
    assert next(iter(fields.values()))[:10] in body["detail"]
    assert stored_uploads(client) == []
    assert runtime_of(client).jobs.list()[0] == []


def test_callback_url_is_stored(client: TestClient) -> None:
    # A public address literal: accepted without a DNS query (tests stay on this machine).
    job = upload(client, callback_url="https://93.184.216.34/hooks/earshot").json()
    assert job["callback_url"] == "https://93.184.216.34/hooks/earshot"


def test_unknown_id_is_404(client: TestClient) -> None:
    for method in ("GET", "DELETE"):
        assert_problem(client.request(method, "/v1/analyses/0" * 1), 404, "not_found")
    assert_problem(client.get("/v1/analyses/0123/result"), 404, "not_found")


def test_idempotent_replay_returns_the_same_job(client: TestClient) -> None:
    data = wav_bytes(seed=3)
    first = upload(client, data, headers={"Idempotency-Key": "k-1"})
    again = upload(client, data, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(queued_messages(client)) == 1
    assert len(stored_uploads(client)) == 1


def test_idempotency_key_with_other_content_is_422(client: TestClient) -> None:
    upload(client, wav_bytes(seed=1), headers={"Idempotency-Key": "k-2"})
    r = upload(client, wav_bytes(seed=2), headers={"Idempotency-Key": "k-2"})
    assert_problem(r, 422, "idempotency_key_reused")
    r = upload(client, wav_bytes(seed=1), headers={"Idempotency-Key": "k-2"}, profile="fast")
    assert_problem(r, 422, "idempotency_key_reused")
    assert len(stored_uploads(client)) == 1


def test_same_content_after_success_is_served_from_cache(client: TestClient) -> None:
    data = wav_bytes(seed=5)
    source = upload(client, data).json()
    finish(client, source["id"], document={"bpm": 120.0})

    r = upload(client, data, filename="copy.wav")
    assert r.status_code == 202
    job = r.json()
    assert job["id"] != source["id"]
    assert job["status"] == "succeeded" and job["cached"] is True
    assert job["progress"] == {"stage": "done", "percent": 100.0}
    assert len(queued_messages(client)) == 1  # only the source was ever queued
    assert client.get(job["links"]["result"]).json() == {"bpm": 120.0}
    # Another profile is another analysis.
    assert upload(client, data, profile="fast").json()["status"] == "queued"


def test_cancel_a_queued_job(client: TestClient) -> None:
    job = upload(client).json()
    r = client.delete(f"/v1/analyses/{job['id']}")
    assert r.status_code == 200
    assert r.json()["status"] == "canceled"
    assert r.json()["finished_at"] is not None
    assert stored_uploads(client) == []
    # The queued message stays, but no worker can claim a canceled job.
    assert runtime_of(client).jobs.mark_running(job["id"]) is False
    assert_problem(client.delete(f"/v1/analyses/{job['id']}"), 409, "already_finished")


def test_cancel_a_finished_job_is_409(client: TestClient) -> None:
    job = upload(client).json()
    finish(client, job["id"], document={})
    body = assert_problem(client.delete(f"/v1/analyses/{job['id']}"), 409, "already_finished")
    assert "succeeded" in body["detail"]
    assert client.get(f"/v1/analyses/{job['id']}").json()["status"] == "succeeded"


def test_list_newest_first_with_filter_and_cursor(client: TestClient) -> None:
    ids = [upload(client, wav_bytes(seed=i)).json()["id"] for i in range(5)]
    client.delete(f"/v1/analyses/{ids[1]}")

    page = client.get("/v1/analyses", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["items"]]
    while page["next_cursor"]:
        page = client.get("/v1/analyses", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        seen += [j["id"] for j in page["items"]]
    assert seen == ids[::-1]

    canceled = client.get("/v1/analyses", params={"status": "canceled"}).json()
    assert [j["id"] for j in canceled["items"]] == [ids[1]]
    assert canceled["next_cursor"] is None


def test_list_rejects_bad_parameters(client: TestClient) -> None:
    assert_problem(client.get("/v1/analyses", params={"cursor": "garbage!"}), 400, "invalid_cursor")
    assert_problem(client.get("/v1/analyses", params={"limit": 0}), 422, "invalid_request")
    assert_problem(client.get("/v1/analyses", params={"limit": 201}), 422, "invalid_request")
    assert_problem(client.get("/v1/analyses", params={"status": "lost"}), 422, "invalid_request")


def test_broker_down_fails_the_job_and_answers_503(
    make_client: Callable[..., TestClient],
) -> None:
    # Nothing listens on port 1: a real, refused connection.
    client = make_client(broker_url="amqp://guest:guest@127.0.0.1:1//")
    r = upload(client, headers={"Idempotency-Key": "k-503"})
    body = assert_problem(r, 503, "broker_unavailable")
    assert int(r.headers["retry-after"]) > 0
    job = runtime_of(client).jobs.get(body["job_id"])
    assert job.status is JobStatus.FAILED and job.error_code == "broker_unavailable"
    assert stored_uploads(client) == []
    # The client was told to retry: the same key must try again, not replay the failure.
    assert_problem(upload(client, headers={"Idempotency-Key": "k-503"}), 503, "broker_unavailable")


def test_api_keys_separate_owners(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="alpha-key,beta-key")
    assert_problem(upload(client), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    assert_problem(upload(client, headers=wrong), 401, "unauthorized")
    alpha = {"Authorization": "Bearer alpha-key"}
    beta = {"X-API-Key": "beta-key"}
    job = upload(client, headers=alpha).json()
    assert client.get(f"/v1/analyses/{job['id']}", headers=alpha).status_code == 200
    assert_problem(client.get(f"/v1/analyses/{job['id']}", headers=beta), 404, "not_found")
    assert client.get("/v1/analyses", headers=beta).json()["items"] == []
    assert runtime_of(client).jobs.get(job["id"]).owner not in ("", "alpha-key")


def test_wait_holds_the_answer_until_the_status_changes(client: TestClient) -> None:
    import threading

    job = upload(client).json()
    jobs = runtime_of(client).jobs
    # A worker claims the job while the request is held (a real claim: the same UPDATE the
    # task makes), then another request waits for the success.
    claim = threading.Timer(0.3, jobs.claim, args=[job["id"]])
    claim.start()
    held = client.get(f"/v1/analyses/{job['id']}", params={"wait": 30})
    claim.join()
    assert held.status_code == 200
    assert held.json()["status"] == "running"  # not the "queued" it had when asked
    done = threading.Timer(
        0.3, lambda: jobs.succeed(job["id"], result_prefix="r/", analyzer_version="x")
    )
    done.start()
    ended = client.get(f"/v1/analyses/{job['id']}", params={"wait": 30})
    done.join()
    assert ended.json()["status"] == "succeeded"
    # Finished: answered as it is (a held answer would still say succeeded, but nothing waits).
    assert client.get(f"/v1/analyses/{job['id']}", params={"wait": 30}).json()["status"] == (
        "succeeded"
    )


def test_wait_until_finished_holds_past_running(client: TestClient) -> None:
    import threading

    job = upload(client).json()
    jobs = runtime_of(client).jobs
    # The job starts while the request is held, then ends: one answer, the end.
    starts = threading.Timer(0.2, jobs.claim, args=[job["id"]])
    ends = threading.Timer(
        0.5, lambda: jobs.succeed(job["id"], result_prefix="r/", analyzer_version="x")
    )
    starts.start()
    ends.start()
    held = client.get(f"/v1/analyses/{job['id']}", params={"wait": 30, "until": "finished"})
    starts.join()
    ends.join()
    assert held.status_code == 200 and held.json()["status"] == "succeeded"
    # A job that only starts within `wait` is answered as it is when the time is up.
    other = upload(client, wav_bytes(seconds=0.2)).json()
    jobs.claim(other["id"])
    held = client.get(f"/v1/analyses/{other['id']}", params={"wait": 0.5, "until": "finished"})
    assert held.json()["status"] == "running"
    assert_problem(
        client.get(f"/v1/analyses/{job['id']}", params={"wait": 1, "until": "soon"}),
        422,
        "invalid_request",
    )


def test_wait_is_bounded_by_the_server_and_validated(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(status_wait_max_s=0)
    job = upload(client).json()
    # Held at most EARSHOT_STATUS_WAIT_MAX_S (0 here): the queued job comes back queued.
    assert client.get(f"/v1/analyses/{job['id']}", params={"wait": 60}).json()["status"] == (
        "queued"
    )
    assert_problem(
        client.get(f"/v1/analyses/{job['id']}", params={"wait": 61}), 422, "invalid_request"
    )
    assert_problem(
        client.get(f"/v1/analyses/{job['id']}", params={"wait": -1}), 422, "invalid_request"
    )
    assert_problem(client.get("/v1/analyses/nope", params={"wait": 5}), 404, "not_found")
