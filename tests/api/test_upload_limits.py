"""Uploads cannot starve the API: a bound on concurrent uploads, an idle timeout, their own
threads; and a client hanging up mid-upload is logged as what it is, not as an error.

The app runs in-process behind httpx's ASGI transport (or is called as the ASGI callable it
is), so a request body can stall for as long as a test wants, deterministically.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from core import workers
from core.jobs import ANONYMOUS
from core.names import Queue
from core.runtime import Runtime
from core.settings import Settings
from tests.api.conftest import wav_bytes

BOUNDARY = "stalledboundary"
# Hang guard for each request below: not a speed assertion, a bound so a starved API fails
# the test instead of hanging it.
GUARD_S = 10.0


def part_head(filename: str = "a.wav") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


class StalledBody:
    """A multipart body that sends its part header and the first bytes, then waits for ``go``.

    Once released it sends the rest of a valid WAV and the closing boundary. A class, not an
    async generator, so an abandoned body leaves no generator to finalise.
    """

    def __init__(self, go: anyio.Event, *, data: bytes) -> None:
        self.go = go
        self.pieces = [part_head() + data[:4], data[4:] + f"\r\n--{BOUNDARY}--\r\n".encode()]
        self.sent = 0

    def __aiter__(self) -> StalledBody:
        return self

    async def __anext__(self) -> bytes:
        if self.sent == len(self.pieces):
            raise StopAsyncIteration
        if self.sent == 1:
            await self.go.wait()
        self.sent += 1
        return self.pieces[self.sent - 1]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[type[FastAPI]]:
    made: list[FastAPI] = []

    def make(**overrides: object) -> FastAPI:
        settings = Settings(data_dir=tmp_path / f"var{len(made)}", **overrides)  # type: ignore[arg-type]
        app = create_app(settings)
        made.append(app)
        return app

    yield make  # type: ignore[misc]
    for app in made:
        app.state.runtime.close()


def post(client: httpx.AsyncClient, body: object) -> object:
    return client.post(
        "/v1/analyses",
        content=body,  # type: ignore[arg-type]
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def stored_uploads(app: FastAPI) -> list[Path]:
    """Every file under the blob store's uploads/ (partial ``.part`` files included)."""
    root = Path(app.state.settings.data_dir) / "blobs" / "uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def job_count(app: FastAPI) -> int:
    runtime: Runtime = app.state.runtime
    page, _ = runtime.jobs.list(owner=ANONYMOUS, limit=200)
    return len(page)


def test_stalled_uploads_never_take_the_threads_other_routes_need(make_app) -> None:  # type: ignore[no-untyped-def]
    """Four uploads stalled mid-body, with only two threads in anyio's default pool: the sync
    routes still answer, a fifth upload is refused before its body is read, and the stalled
    ones complete once their bytes come.

    Before, each upload held one thread of the default pool while it waited for bytes: with as
    many stalled uploads as threads (40 in production, 2 here) /readyz and GET /v1/analyses
    waited forever."""
    app = make_app(max_concurrent_uploads=4)
    slots = app.state.upload_slots
    data = wav_bytes()
    # As a warm pool of each queue records itself: /readyz then answers 200 when not starved.
    for queue in Queue:
        workers.announce(app.state.runtime.settings, f"{queue.value}.1@host", [queue.value])

    async def main() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        go = anyio.Event()
        answers: list[httpx.Response] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://earshot") as client:

            async def upload() -> None:
                answers.append(await post(client, StalledBody(go, data=data)))  # type: ignore[misc]

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(upload)
                with anyio.fail_after(GUARD_S):
                    while slots.active < 4:
                        await anyio.sleep(0.01)
                with anyio.fail_after(GUARD_S):
                    assert (await client.get("/healthz")).status_code == 200
                    ready = await client.get("/readyz")
                    assert ready.status_code == 200, ready.text
                    listed = await client.get("/v1/analyses")
                    assert listed.status_code == 200, listed.text
                    assert listed.json()["items"] == []

                    fifth = StalledBody(go, data=data)
                    refused = await post(client, fifth)  # type: ignore[misc]
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["code"] == "too_many_uploads"
                assert int(refused.headers["Retry-After"]) > 0
                assert fifth.sent == 0, "the refused upload's body was read"
                go.set()
        assert sorted(a.status_code for a in answers) == [202] * 4, [a.text for a in answers]

    anyio.run(main)
    assert slots.active == 0
    assert len(stored_uploads(app)) == 4
    assert job_count(app) == 4


def test_an_upload_idle_past_the_timeout_is_answered_408_and_nothing_is_kept(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(upload_idle_timeout_s=0.5)

    async def main() -> httpx.Response:
        never = anyio.Event()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://earshot") as client:
            with anyio.fail_after(GUARD_S):
                return await post(client, StalledBody(never, data=wav_bytes()))  # type: ignore[no-any-return, misc]

    answer = anyio.run(main)
    assert answer.status_code == 408, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "upload_timeout"
    assert "EARSHOT_UPLOAD_IDLE_TIMEOUT_S" in problem["detail"]
    # The client may be sending still: the connection is closed rather than read on.
    assert answer.headers["connection"] == "close"
    assert stored_uploads(app) == []
    assert job_count(app) == 0
    assert app.state.upload_slots.active == 0


def test_a_client_hanging_up_mid_upload_is_an_info_line_not_an_error(
    make_app,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ASGI server tells the app that the client left with ``http.disconnect``; before,
    that surfaced as two ERROR tracebacks (ours and the server's) and an exception out of the
    app."""
    app = make_app()
    data = wav_bytes()
    messages = [
        {"type": "http.request", "body": part_head() + data[:100], "more_body": True},
        {"type": "http.request", "body": data[100:300], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/analyses",
        "raw_path": b"/v1/analyses",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"earshot"),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"x-request-id", b"hangs-up-1"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def main() -> None:
        with anyio.fail_after(GUARD_S):
            await app(scope, receive, send)

    with caplog.at_level(logging.INFO):
        anyio.run(main)  # before: raised ClientDisconnect

    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, caplog.text
    assert f"after {len(part_head()) + 300} bytes" in lines[0].getMessage()
    assert stored_uploads(app) == []
    assert job_count(app) == 0
    assert app.state.upload_slots.active == 0


def test_a_body_that_keeps_coming_is_not_cut_by_the_idle_timeout(make_app) -> None:  # type: ignore[no-untyped-def]
    """The timeout is per read, not per upload: a body slower in total than the timeout, but
    never idle that long, is accepted."""
    app = make_app(upload_idle_timeout_s=0.5)
    data = wav_bytes(seconds=1.0)
    body = part_head() + data + f"\r\n--{BOUNDARY}--\r\n".encode()

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(body), len(body) // 8 + 1):
            await anyio.sleep(0.15)  # 9 pieces: well over the 0.5 s timeout in total
            yield body[start : start + len(body) // 8 + 1]

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://earshot") as client:
            with anyio.fail_after(GUARD_S):
                return await post(client, trickle())  # type: ignore[no-any-return, misc]

    answer = anyio.run(main)
    assert answer.status_code == 202, answer.text
    (stored,) = stored_uploads(app)
    assert stored.read_bytes() == data
