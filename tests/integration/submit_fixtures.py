"""A real earshot service for the batch client's tests: ``earshot dev`` in embedded mode.

The service runs as a subprocess on a free port with its own data folder, exactly as a user
starts it; the client under test talks to it over HTTP like any other client.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
# Starting the API and two warmed-up worker pools on a busy 2-core machine: generous, since
# this only bounds how long a broken start hangs the suite, it asserts nothing about speed.
START_DEADLINE_S = 180.0


@dataclass(frozen=True)
class Service:
    url: str
    data_dir: Path
    log: Path

    def jobs(self, **params: Any) -> list[dict[str, Any]]:
        """Every job the service holds, following the list's cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while True:
                query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
                page = client.get("/v1/analyses", params=query).raise_for_status().json()
                items.extend(page["items"])
                cursor = page["next_cursor"]
                if not cursor:
                    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, numba_cache: Path) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("earshot-data")
    port = free_port()
    log = data_dir / "service.log"
    env = {
        **os.environ,
        "EARSHOT_DATA_DIR": str(data_dir),
        "EARSHOT_LOG_LEVEL": "WARNING",
        "NUMBA_CACHE_DIR": str(numba_cache),
    }
    env.pop("EARSHOT_API_KEYS", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "earshot", "dev", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"earshot dev exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"earshot dev not ready after {START_DEADLINE_S} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Service(url=url, data_dir=data_dir, log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sample_tree(root: Path) -> dict[str, Path]:
    """Every committed sample, spread over nested folders by format; returns rel -> path."""
    tree: dict[str, Path] = {}
    for sample in sorted(SAMPLES.iterdir()):
        if sample.name.startswith(".") or sample.suffix in (".md", ".txt"):
            continue
        ext = sample.suffix.lstrip(".")
        rel = f"{'lossless' if ext in ('wav', 'flac') else 'lossy'}/{ext}/{sample.name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, root / rel)
        tree[rel] = root / rel
    return tree


def broken_files(root: Path) -> dict[str, Path]:
    """Files the service must refuse: text named .wav, a truncated FLAC, an empty file."""
    broken = {
        "broken/notes.wav": b"these are liner notes, not audio\n" * 20,
        "broken/cut.flac": (SAMPLES / "click120_cmajor.flac").read_bytes()[:3000],
        "broken/empty.wav": b"",
    }
    for rel, data in broken.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return {rel: root / rel for rel in broken}


def run_cli(
    *args: str, check_rc: int | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "earshot", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check_rc is not None:
        assert done.returncode == check_rc, (done.returncode, done.stdout, done.stderr)
    return done


# (status, content type, body) of the answer to (method, path)
Answer = Callable[[str, str], tuple[int, str, bytes]]


@dataclass
class OtherServer:
    """An HTTP server on 127.0.0.1 that is not earshot, and the requests it received."""

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def other_server(answer: Answer) -> Iterator[OtherServer]:
    """Serve ``answer`` on a free port in a thread (what a wrong ``--api-url`` may reach)."""
    lock = threading.Lock()
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            with lock:
                seen.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            status, content_type, body = answer(self.command, self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 503:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = handle_any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield OtherServer(url=f"http://127.0.0.1:{server.server_address[1]}", requests=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
