"""Server-Sent Events of a job, read from a real uvicorn server while the job moves on.

The test and the stream run in lockstep: change the job, then read the next event. No timing
is asserted; a bound on each read only turns a hung stream into a failure.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes import events
from core.jobs import Job
from core.names import Priority
from core.runtime import Runtime
from core.settings import Settings
from tests.api.conftest import wav_bytes

READ_TIMEOUT_S = 30.0


@dataclass
class Served:
    url: str
    runtime: Runtime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    app = create_app(Settings(data_dir=tmp_path / "var"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + READ_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{port}", app.state.runtime)
    server.should_exit = True
    thread.join(READ_TIMEOUT_S)


def new_job(runtime: Runtime) -> Job:
    job, _ = runtime.jobs.create(
        filename="take.wav",
        size_bytes=4,
        sha256="0" * 64,
        profile="standard",
        priority=Priority.INTERACTIVE.value,
    )
    return job


def messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE messages as dicts of their fields; a comment line comes as {"comment": text}."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    if fields:
        yield fields


def next_status(stream: Iterator[dict[str, str]]) -> dict[str, object]:
    for message in stream:
        if message.get("event") == "status":
            assert message["id"]
            data: dict[str, object] = json.loads(message["data"])
            return data
    raise AssertionError("the stream ended before the next status event")


def test_events_follow_the_job_to_its_end_and_the_stream_closes(served: Served) -> None:
    jobs = served.runtime.jobs
    job = new_job(served.runtime)
    url = f"{served.url}/v1/analyses/{job.id}/events"
    with httpx.stream("GET", url, timeout=READ_TIMEOUT_S) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = messages(response.iter_lines())
        assert next(stream) == {"retry": "2000"}

        first = next_status(stream)
        assert first["id"] == job.id
        assert first["status"] == "queued"

        assert jobs.mark_running(job.id)
        running = next_status(stream)
        assert running["status"] == "running"
        assert running["progress"] == {"stage": "starting", "percent": 0.0}

        assert jobs.update_progress(job.id, stage="features", percent=50.0)
        assert next_status(stream)["progress"] == {"stage": "features", "percent": 50.0}

        assert jobs.mark_succeeded(job.id, result_prefix="results/x/", analyzer_version="t")
        last = next_status(stream)
        assert last["status"] == "succeeded"
        assert last["links"]["result"] == f"/v1/analyses/{job.id}/result"  # type: ignore[index]
        # The terminal event is the last thing on the stream.
        assert [m for m in stream if "comment" not in m] == []


def test_a_finished_job_gets_one_event_and_the_end(served: Served) -> None:
    job = new_job(served.runtime)
    served.runtime.jobs.cancel(job.id)
    response = httpx.get(
        f"{served.url}/v1/analyses/{job.id}/events",
        headers={"Last-Event-ID": "1700000000.000000"},
        timeout=READ_TIMEOUT_S,
    )
    assert response.status_code == 200
    statuses = [
        json.loads(m["data"])["status"]
        for m in messages(iter(response.text.splitlines()))
        if m.get("event") == "status"
    ]
    assert statuses == ["canceled"]


def test_a_quiet_job_gets_heartbeats(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.2)
    job = new_job(served.runtime)
    with httpx.stream(
        "GET", f"{served.url}/v1/analyses/{job.id}/events", timeout=READ_TIMEOUT_S
    ) as response:
        stream = messages(response.iter_lines())
        assert next_status(stream)["status"] == "queued"
        assert next(m for m in stream if "comment" in m) == {"comment": "keep-alive"}
        served.runtime.jobs.cancel(job.id)
        assert next_status(stream)["status"] == "canceled"


def test_an_unknown_job_is_a_404_problem(served: Served) -> None:
    response = httpx.get(f"{served.url}/v1/analyses/{'0' * 32}/events", timeout=READ_TIMEOUT_S)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_another_keys_job_is_not_streamed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", api_keys="alpha,beta")
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/v1/analyses",
            files={"file": ("a.wav", wav_bytes(), "audio/wav")},
            headers={"Authorization": "Bearer alpha"},
        ).json()
        url = f"/v1/analyses/{created['id']}/events"
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer beta"}).status_code == 404
