"""Fixtures of the API tests: the real app on a real runtime (SQLite, local blobs, filesystem://
broker) under tmp_path, driven through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import json
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core import workers
from core.names import FRAMES_CSV, FRAMES_NPZ, RESULT_JSON, Queue, result_prefix
from core.runtime import Runtime
from core.settings import Settings


def wav_bytes(*, seconds: float = 0.25, sr: int = 8000, seed: int = 0) -> bytes:
    """A small 16-bit mono WAV; ``seed`` changes the samples (and so the sha256)."""
    frames = bytes((i * 7 + seed) % 256 for i in range(int(seconds * sr) * 2))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(frames)
    return buf.getvalue()


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Build a client for Settings(**overrides) on a fresh data dir; closed at teardown."""
    opened: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = Settings(data_dir=tmp_path / f"var{len(opened)}", **overrides)  # type: ignore[arg-type]
        client = TestClient(create_app(settings))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def announce_warm_workers(settings: Settings) -> None:
    """Record a warm pool on every queue, as each pool of `earshot dev` does once it consumes
    (core/workers.py): these app-only tests run no worker, and /readyz waits for one."""
    for queue in Queue:
        workers.announce(settings, f"{queue.value}.1@tests", [queue.value])


def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def upload(
    client: TestClient,
    data: bytes | None = None,
    *,
    filename: str = "take 1.wav",
    headers: dict[str, str] | None = None,
    **fields: str,
):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/analyses",
        files={"file": (filename, wav_bytes() if data is None else data, "audio/wav")},
        data=fields,
        headers=headers or {},
    )


def queued_messages(client: TestClient) -> list[dict[str, object]]:
    """The messages the filesystem:// broker holds: headers and decoded body of each."""
    folder = runtime_of(client).settings.broker_dir / "messages"
    messages = []
    for path in sorted(folder.glob("*.msg")):
        envelope = json.loads(path.read_text())
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        messages.append({"path": path, "headers": envelope["headers"], "body": json.loads(body)})
    return messages


def finish(client: TestClient, job_id: str, *, document: dict[str, object]) -> None:
    """Do what a worker does for a succeeded job: store result files (result.json last)."""
    runtime = runtime_of(client)
    assert runtime.jobs.mark_running(job_id)
    prefix = result_prefix(job_id)
    runtime.blobs.put_bytes(prefix + FRAMES_CSV, b"time_s,rms\n0.0,0.5\n")
    runtime.blobs.put_bytes(prefix + FRAMES_NPZ, b"PK\x03\x04 not really an npz")
    runtime.blobs.put_bytes(prefix + RESULT_JSON, json.dumps(document).encode())
    assert runtime.jobs.mark_succeeded(
        job_id, result_prefix=prefix, analyzer_version=runtime.analyzer_version
    )


def stored_uploads(client: TestClient) -> list[Path]:
    root = runtime_of(client).settings.data_dir / "blobs" / "uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
