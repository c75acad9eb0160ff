"""Webhooks against a real HTTP receiver on 127.0.0.1, verified with the spec's algorithm."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tasks.errors import ConfigurationError
from tasks.jobs import Job, JobRow
from tasks.names import WEBHOOK_TASK, JobStatus
from tasks.runtime import Runtime
from tasks.settings import Settings
from tasks.webhooks import (
    EXTRA_KEY,
    MAX_RETRIES,
    backoff_s,
    deliveries,
    secret_key,
    signature,
)
from tests.tasks.conftest import submit

SECRET = "whsec_" + base64.b64encode(b"earshot webhook test key 32 byte").decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """Standard Webhooks verification, written from the spec (not from tasks.webhooks)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    signed = f"{msg_id}.{timestamp}.{body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@dataclass
class Receiver:
    """An HTTP server answering each POST with the next status of ``answers`` (then 200)."""

    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/earshot"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def signed_runtime(runtime: Runtime) -> Runtime:
    runtime.settings = Settings(data_dir=runtime.settings.data_dir, webhook_secret=SECRET)
    return runtime


def ended_job(runtime: Runtime, wav_bytes: bytes, url: str, *, succeed: bool = True) -> Job:
    job = submit(runtime, wav_bytes)
    with runtime.jobs.session() as s:
        row = s.get(JobRow, job.id)
        assert row is not None
        row.callback_url = url
    assert runtime.jobs.mark_running(job.id)
    if succeed:
        assert runtime.jobs.mark_succeeded(
            job.id, result_prefix=f"results/{job.id}/", analyzer_version="test"
        )
    else:
        assert runtime.jobs.mark_failed(job.id, code="unreadable_audio", message="not audio")
    return runtime.jobs.get(job.id)


def run_webhook(runtime: Runtime, job_id: str) -> Any:
    # Eager apply runs Celery's retries in place, one after another (countdown is not waited).
    return runtime.celery.tasks[WEBHOOK_TASK].apply(args=[job_id]).get()


def test_the_spec_test_vector_signs_as_published() -> None:
    # From the Standard Webhooks specification's reference test suite.
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_not base64!", "plain words"])
def test_a_malformed_secret_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="EARSHOT_WEBHOOK_SECRET"):
        secret_key(bad)


def test_success_is_posted_once_signed_and_recorded(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    job = ended_job(signed_runtime, wav_bytes, receiver.url)

    assert run_webhook(signed_runtime, job.id) is True

    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert verify(SECRET, headers, body)
    assert headers["webhook-id"] == f"msg_{job.id}"
    assert headers["content-type"] == "application/json"
    event = json.loads(body)
    assert event["type"] == "analysis.succeeded"
    assert event["data"]["id"] == job.id
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["links"]["result"] == f"/v1/analyses/{job.id}/result"
    recorded = deliveries(signed_runtime.jobs.get(job.id))
    assert [(d["attempt"], d["status_code"], d["error"]) for d in recorded] == [(1, 200, None)]
    # The other extra fields of the job survive the record.
    assert signed_runtime.jobs.get(job.id).extra.keys() >= {EXTRA_KEY}


def test_a_tampered_body_does_not_verify(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    job = ended_job(signed_runtime, wav_bytes, receiver.url)
    run_webhook(signed_runtime, job.id)
    headers, body = receiver.received[0]
    assert not verify(SECRET, headers, body.replace(b"succeeded", b"failed"))
    other = "whsec_" + base64.b64encode(b"another key entirely").decode()
    assert not verify(other, headers, body)


def test_a_failing_receiver_gets_retries_and_every_attempt_is_recorded(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    job = ended_job(signed_runtime, wav_bytes, receiver.url, succeed=False)

    assert run_webhook(signed_runtime, job.id) is True

    assert len(receiver.received) == 3
    # Same message id and body on every attempt; each attempt signed for its own timestamp.
    assert {h["webhook-id"] for h, _ in receiver.received} == {f"msg_{job.id}"}
    assert len({b for _, b in receiver.received}) == 1
    assert all(verify(SECRET, h, b) for h, b in receiver.received)
    assert json.loads(receiver.received[0][1])["data"]["error"]["code"] == "unreadable_audio"
    recorded = deliveries(signed_runtime.jobs.get(job.id))
    assert [(d["attempt"], d["status_code"]) for d in recorded] == [(1, 500), (2, 503), (3, 200)]
    assert recorded[0]["error"] == "receiver answered 500"
    assert recorded[2]["error"] is None
    assert all(d["at"].endswith("Z") for d in recorded)


def test_an_unreachable_receiver_is_retried_then_given_up(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    # A port nobody listens on: every attempt is a connection error.
    dead = receiver.url.rsplit(":", 1)[0] + ":9/hooks"
    job = ended_job(signed_runtime, wav_bytes, dead)

    assert run_webhook(signed_runtime, job.id) is False

    recorded = deliveries(signed_runtime.jobs.get(job.id))
    assert [d["attempt"] for d in recorded] == list(range(1, MAX_RETRIES + 2))
    assert all(d["status_code"] is None and "Connect" in d["error"] for d in recorded)


def test_without_a_secret_the_body_is_sent_unsigned(
    runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    job = ended_job(runtime, wav_bytes, receiver.url)
    assert run_webhook(runtime, job.id) is True
    headers, _ = receiver.received[0]
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == f"msg_{job.id}"


def test_nothing_is_sent_for_a_job_without_url_or_still_running(
    runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    no_url = submit(runtime, wav_bytes)
    assert runtime.jobs.mark_running(no_url.id)
    runtime.jobs.mark_failed(no_url.id, code="x", message="y")
    assert run_webhook(runtime, no_url.id) is False
    assert run_webhook(runtime, "0" * 32) is False
    running = submit(runtime, wav_bytes)
    with runtime.jobs.session() as s:
        row = s.get(JobRow, running.id)
        assert row is not None
        row.callback_url = receiver.url
    assert runtime.jobs.mark_running(running.id)
    assert run_webhook(runtime, running.id) is False
    assert receiver.received == []
    assert runtime.jobs.get(no_url.id).status is JobStatus.FAILED


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_s(30) == 3600.0
