"""HEAD on every GET route, read as raw bytes from a real uvicorn server.

TestClient and httpx both know a HEAD response has no body and would hide one on the wire, so
each request here is written to a socket and the answer parsed by hand: the status line, the
headers, and whatever bytes follow the blank line (there must be none).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from analysis import analyze_file
from api.app import create_app
from core.names import SPECTROGRAM_PNG, WAVEFORM_JSON, result_prefix
from core.settings import Settings
from tests.api.conftest import announce_warm_workers, finish, wav_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KEY = "head-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT_S = 30.0
# Differ between any two requests by nature, not by method.
PER_REQUEST = {"date", "x-request-id"}
# Framing: a HEAD answer has no body to frame (RFC 9110 9.3.2).
FRAMING = {"transfer-encoding"}
# Routes outside the OpenAPI document that answer GET.
UNDOCUMENTED = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/docs",
    "/redoc",
    "/static/vendor/swagger-ui-bundle.js",
    "/static/vendor/swagger-ui.css",
    "/static/vendor/redoc.standalone.js",
    "/static/vendor/favicon-32x32.png",
    "/openapi.json",
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    host: str
    port: int
    done_id: str
    queued_id: str

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        """One request on its own connection; the answer is everything until the server
        closes it."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        with socket.create_connection((self.host, self.port), timeout=TIMEOUT_S) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            deadline = time.monotonic() + TIMEOUT_S
            while chunk := sock.recv(65536):
                data += chunk
                assert time.monotonic() < deadline, f"{method} {path}: answer never ended"
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        return Answer(int(status_line.split()[1]), parsed, body)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("head") / "var", api_keys=KEY))
    runtime = app.state.runtime
    announce_warm_workers(runtime.settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ids = []
    for seed in (1, 2):
        r = httpx.post(
            url + "/v1/analyses",
            files={"file": ("a.wav", wav_bytes(seed=seed), "audio/wav")},
            headers=AUTH,
            timeout=TIMEOUT_S,
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    done_id, queued_id = ids
    # A real result document: the Spotify-shaped views are built from its fields.
    document = dict(analyze_file(SAMPLES / "sine440.wav", profile="fast").document)
    finish(SimpleNamespace(app=app), done_id, document=document)  # type: ignore[arg-type]
    prefix = result_prefix(done_id)
    runtime.blobs.put_bytes(prefix + WAVEFORM_JSON, json.dumps({"version": 2}).encode())
    runtime.blobs.put_bytes(prefix + SPECTROGRAM_PNG, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    yield Served("127.0.0.1", port, done_id, queued_id)
    server.should_exit = True
    thread.join(TIMEOUT_S)


def get_paths(served: Served) -> list[str]:
    """Every GET path of the OpenAPI document (ids filled in), and the undocumented ones."""
    document: dict[str, Any] = json.loads(served.raw("GET", "/openapi.json").body)
    paths = [
        path.replace("{job_id}", served.done_id)
        for path, item in document["paths"].items()
        if "get" in item
    ]
    assert f"/v1/analyses/{served.done_id}/result" in paths  # the document was read
    return paths + UNDOCUMENTED


def comparable(answer: Answer) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k not in PER_REQUEST | FRAMING}


def test_head_answers_like_get_without_a_body_on_every_get_route(served: Served) -> None:
    checked = []
    for path in get_paths(served):
        get = served.raw("GET", path, AUTH)
        head = served.raw("HEAD", path, AUTH)
        assert head.status == get.status, path
        assert comparable(head) == comparable(get), path
        assert head.body == b"", path
        assert "x-request-id" in head.headers, path
        if "content-length" in get.headers:
            assert int(head.headers["content-length"]) == len(get.body), path
        checked.append((path, get.status))
    # Not a run of 404s: the documented routes found the job, the UI files exist.
    assert all(status == 200 for _, status in checked), checked


def test_head_of_the_metrics_scrape_has_its_type_and_no_body(served: Served) -> None:
    # The scrape's size changes with every request counted, so only the type is compared.
    get, head = served.raw("GET", "/metrics"), served.raw("HEAD", "/metrics")
    assert head.status == get.status == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.body == b""


def test_head_needs_the_same_key_as_get(served: Served) -> None:
    path = f"/v1/analyses/{served.done_id}"
    get, head = served.raw("GET", path), served.raw("HEAD", path)
    assert get.status == head.status == 401
    assert head.headers["content-type"] == "application/problem+json"
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.body == b""


def test_head_with_a_matching_etag_is_not_modified(served: Served) -> None:
    path = f"/v1/analyses/{served.done_id}/result?format=csv"
    etag = served.raw("HEAD", path, AUTH).headers["etag"]
    again = served.raw("HEAD", path, {**AUTH, "If-None-Match": etag})
    assert again.status == 304
    assert again.headers["etag"] == etag
    assert again.body == b""


def test_head_of_the_event_stream_of_a_running_job_ends_at_once(served: Served) -> None:
    # A GET would stream until the job finishes; HEAD has nothing to wait for.
    head = served.raw("HEAD", f"/v1/analyses/{served.queued_id}/events", AUTH)
    assert head.status == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.body == b""


def test_a_405_allows_head_where_get_is_served(served: Served) -> None:
    answer = served.raw("PUT", "/v1/analyses", AUTH)
    assert answer.status == 405
    allowed = {m.strip() for m in answer.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "POST"}
    answer = served.raw("PATCH", f"/v1/analyses/{served.done_id}", AUTH)
    assert {m.strip() for m in answer.headers["allow"].split(",")} == {"GET", "HEAD", "DELETE"}


def test_head_is_counted_as_head_under_its_route_template(served: Served) -> None:
    served.raw("HEAD", f"/v1/analyses/{served.done_id}", AUTH)
    scrape = served.raw("GET", "/metrics").body.decode()
    counted = [
        line
        for line in scrape.splitlines()
        if line.startswith("earshot_http_requests_total{")
        and 'method="HEAD"' in line
        and 'route="/v1/analyses/{job_id}"' in line
        and 'status="200"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, scrape[-2000:]
