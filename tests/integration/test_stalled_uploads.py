"""Stalled and abandoned uploads against a real `earshot serve` (uvicorn, embedded defaults).

Raw sockets send an upload's request head and multipart part header, then nothing: before,
each such upload held one of the 40 threads every sync route shares, and about 40 of them made
/healthz, /readyz and every GET time out. Needs no server of its own (SQLite, local blobs,
`filesystem://`), so it never skips.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core import workers
from core.names import Queue
from core.settings import Settings
from tests.integration.conftest import SAMPLES, Service, free_port, service_env, wait_for

pytestmark = pytest.mark.integration

STALLED = 60
# Above anyio's 40 default threads (the old freeze point), below STALLED so some are refused.
LIMIT = 50
# Long enough that every step before the timeout fits on a loaded 2-core machine.
IDLE_S = 15.0
# Connections that send only part of a request head (slowloris): they never reach the app.
HALF_HEADS = 20
# Hang guard per request: not a speed assertion, a bound so a starved API fails the test.
GUARD_S = 10.0
BOUNDARY = "stalledboundary"


@dataclass
class Api:
    service: Service
    port: int
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, numba_cache: Path) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("stalled")
    port = free_port()
    env = service_env(
        root / "var",
        numba_cache,
        max_concurrent_uploads=str(LIMIT),
        upload_idle_timeout_s=str(IDLE_S),
        log_format="json",
    )
    service = Service(["serve", "--port", str(port)], env=env, log=root / "serve.log")
    api = Api(service, port, root / "var")

    def healthy() -> bool:
        service.assert_alive()
        try:
            return httpx.get(f"{api.base_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, what="`earshot serve` to answer /healthz", timeout=60)
    # As a warm pool of each queue records itself (this process stands in for the pools): the
    # probes' /readyz then answers 200 when it is not starved.
    for queue in Queue:
        workers.announce(Settings(data_dir=root / "var"), f"{queue.value}.1@host", [queue.value])
    yield api
    # uvicorn re-raises the SIGTERM it handled once shut down: -15 is a clean stop.
    assert service.stop(signal.SIGTERM) in (0, -signal.SIGTERM), service.log()[-4000:]
    log = service.log()
    assert "Traceback" not in log, log[-4000:]
    assert '"level": "ERROR"' not in log, log[-4000:]


def upload_head(request_id: str | None = None) -> bytes:
    """A request head and the start of the file part: all a stalled upload ever sends."""
    extra = f"X-Request-ID: {request_id}\r\n" if request_id else ""
    return (
        "POST /v1/analyses HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: 100000\r\n{extra}\r\n"
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="stalled.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\nRIFF"
    ).encode()


def connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
    sock.sendall(data)
    return sock


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket, *, timeout: float) -> Answer:
    """One HTTP response from ``sock``: status, headers, body (by Content-Length or to EOF)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without an answer: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(lines[0].split()[1]), headers, body)


def closed_by_server(sock: socket.socket, *, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def uploads_in_progress(api: Api) -> float:
    text = httpx.get(f"{api.base_url}/metrics", timeout=GUARD_S).text
    for line in text.splitlines():
        if line.startswith("earshot_http_uploads_in_progress "):
            return float(line.split()[1])
    return 0.0


def stored_uploads(api: Api) -> list[str]:
    """Every file under the blob store's uploads/, partial (``.part``) files included."""
    root = api.data_dir / "blobs" / "uploads"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def job_ids(api: Api) -> list[str]:
    """The job rows, read from the SQLite file itself."""
    with contextlib.closing(sqlite3.connect(api.data_dir / "earshot.db")) as db:
        return sorted(row[0] for row in db.execute("SELECT id FROM jobs"))


def probe(client: httpx.Client, latencies: dict[str, list[float]]) -> None:
    for path in ("/healthz", "/readyz", "/v1/analyses"):
        started = time.perf_counter()
        answer = client.get(path)
        latencies.setdefault(path, []).append(time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.text)


def test_stalled_uploads_do_not_starve_the_api(api: Api) -> None:
    stalled: list[socket.socket] = []
    others: list[socket.socket] = []
    latencies: dict[str, list[float]] = {}
    try:
        for _ in range(HALF_HEADS):
            others.append(connect(api.port, b"POST /v1/analyses HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        for _ in range(LIMIT - 1):
            stalled.append(connect(api.port, upload_head()))
        wait_for(
            lambda: uploads_in_progress(api) == LIMIT - 1,
            what=f"{LIMIT - 1} stalled uploads to be streaming",
            timeout=GUARD_S,
        )

        with httpx.Client(base_url=api.base_url, timeout=GUARD_S) as client:
            probe(client, latencies)
            sample = SAMPLES / "click120_cmajor.wav"
            with sample.open("rb") as f:
                accepted = client.post(
                    "/v1/analyses", files={"file": (sample.name, f, "audio/wav")}
                )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]

            # The last slot, then ten uploads beyond the bound.
            extra = [connect(api.port, upload_head()) for _ in range(STALLED - LIMIT + 1)]
            stalled.extend(extra)
            refused: list[Answer] = []
            selector = selectors.DefaultSelector()
            for sock in extra:
                selector.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + GUARD_S
            while len(refused) < STALLED - LIMIT and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    selector.unregister(sock)
                    refused.append(read_answer(sock, timeout=GUARD_S))
                    stalled.remove(sock)
                    others.append(sock)
            selector.close()
            assert len(refused) == STALLED - LIMIT, [a.status for a in refused]
            for answer in refused:
                assert answer.status == 503, answer
                assert answer.headers["content-type"] == "application/problem+json"
                assert json.loads(answer.body)["code"] == "too_many_uploads"
                assert int(answer.headers["retry-after"]) > 0
            assert uploads_in_progress(api) == LIMIT

            probe(client, latencies)  # every slot held

        # After the idle timeout every stalled upload is answered 408 and its connection closed.
        for sock in stalled:
            answer = read_answer(sock, timeout=IDLE_S + GUARD_S)
            assert answer.status == 408, answer
            assert json.loads(answer.body)["code"] == "upload_timeout"
            assert closed_by_server(sock, timeout=GUARD_S)
        assert uploads_in_progress(api) == 0
        assert stored_uploads(api) == [job_id]
        assert job_ids(api) == [job_id]
        api.service.assert_alive()
    finally:
        for sock in stalled + others:
            sock.close()

    worst = {path: max(values) for path, values in latencies.items()}
    print(
        f"\n{LIMIT} uploads stalled and held, {STALLED - LIMIT} refused 503, "
        f"{HALF_HEADS} half-sent heads; slowest probe answers: "
        + ", ".join(f"{path} {1000 * s:.0f} ms" for path, s in worst.items())
    )


def test_a_client_hanging_up_mid_upload_logs_one_info_line(api: Api) -> None:
    request_id = f"hangs-up-{uuid.uuid4().hex[:8]}"
    uploads_before, jobs_before = stored_uploads(api), job_ids(api)
    wav = (SAMPLES / "click120_cmajor.wav").read_bytes()
    # The head ends with the file's first 4 bytes; 4000 more of a real WAV follow.
    sock = connect(api.port, upload_head(request_id) + wav[4:4004])
    try:
        wait_for(
            lambda: uploads_in_progress(api) == 1,
            what="the upload to be streaming",
            timeout=GUARD_S,
        )
    finally:
        sock.close()  # mid-body: Content-Length promised 100000 bytes

    def lines_of_request() -> list[dict[str, object]]:
        found = []
        for line in api.service.log().splitlines():
            if request_id in line:
                found.append(json.loads(line))
        return found

    lines = wait_for(lines_of_request, what=f"a log line of request {request_id}", timeout=GUARD_S)
    time.sleep(1.0)  # room for a second line (the server's own traceback, before)
    lines = lines_of_request()
    assert len(lines) == 1, lines
    assert lines[0]["level"] == "INFO", lines
    assert "disconnected" in str(lines[0]["message"]), lines
    assert "nothing stored" in str(lines[0]["message"]), lines
    received = re.search(r"after (\d+) bytes", str(lines[0]["message"]))
    assert received and int(received[1]) > 0, lines
    assert "exc_info" not in lines[0]
    assert stored_uploads(api) == uploads_before
    assert job_ids(api) == jobs_before
    api.service.assert_alive()
