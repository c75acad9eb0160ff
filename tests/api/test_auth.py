"""API keys on the real app: who may call what, whose jobs they see, and how many they may run."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import matches, owner_of
from core.jobs import ANONYMOUS
from core.settings import Settings
from earshot.service_cmd import open_bind_allowed
from tests.api.conftest import (
    announce_warm_workers,
    finish,
    runtime_of,
    stored_uploads,
    upload,
    wav_bytes,
)

PROBLEM = "application/problem+json"
ALPHA, BETA = "alpha-key-0123456789", "beta-key-9876543210"
AS_ALPHA = {"Authorization": f"Bearer {ALPHA}"}
AS_BETA = {"Authorization": f"Bearer {BETA}"}
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == code and body["status"] == status
    return body


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=f"{ALPHA}, {BETA}")


def protected_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) in the OpenAPI document except the health probes, ids filled in."""
    routes = []
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if template in OPEN_PATHS:
            continue
        path = re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", template)
        routes.extend((method.upper(), path) for method in sorted(operations))
    return routes


def test_every_route_but_health_needs_a_key(keyed: TestClient) -> None:
    routes = protected_routes(keyed)
    assert ("POST", "/v1/analyses") in routes and ("GET", "/v1/analyses") in routes
    for method, path in routes:
        r = keyed.request(method, path)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer", (method, path)
    assert keyed.get("/healthz").status_code == 200
    announce_warm_workers(runtime_of(keyed).settings)
    assert keyed.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Basic {ALPHA}"},  # a known key under the wrong scheme
        {"Authorization": f"Bearer {ALPHA}x"},
        {"Authorization": f"Bearer {ALPHA[:-1]}"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "nope"},
    ],
)
def test_wrong_keys_are_401(keyed: TestClient, headers: dict[str, str]) -> None:
    r = upload(keyed, headers=headers)
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert stored_uploads(keyed) == []
    assert runtime_of(keyed).jobs.list()[0] == []


def test_bearer_and_x_api_key_both_work(keyed: TestClient) -> None:
    assert upload(keyed, headers=AS_ALPHA).status_code == 202
    assert upload(keyed, wav_bytes(seed=1), headers={"X-API-Key": BETA}).status_code == 202


def test_keys_file_with_comments_and_blank_lines(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# team audio\n{ALPHA}\n\n  {BETA}  \n")
    client = make_client(api_keys_file=keys_file)
    assert upload(client, headers=AS_BETA).status_code == 202
    assert_problem(
        upload(client, headers={"Authorization": "Bearer # team audio"}), 401, "unauthorized"
    )


def test_another_keys_job_is_404_exactly_like_a_missing_one(keyed: TestClient) -> None:
    job = upload(keyed, headers=AS_ALPHA).json()
    finish(keyed, job["id"], document={"bpm": 120})
    missing = "f" * 32
    for suffix, method in (("", "GET"), ("/result", "GET"), ("", "DELETE")):
        theirs = keyed.request(method, f"/v1/analyses/{job['id']}{suffix}", headers=AS_BETA)
        nobody = keyed.request(method, f"/v1/analyses/{missing}{suffix}", headers=AS_BETA)
        a, b = assert_problem(theirs, 404, "not_found"), assert_problem(nobody, 404, "not_found")
        # Same answer but for the id itself: nothing tells that the job exists.
        assert a["detail"].replace(job["id"], missing) == b["detail"]
        assert a["title"] == b["title"] and set(a) == set(b)
    # Beta's DELETE did not cancel alpha's job, and alpha still sees its result.
    assert keyed.get(f"/v1/analyses/{job['id']}", headers=AS_ALPHA).json()["status"] == "succeeded"
    assert keyed.get(f"/v1/analyses/{job['id']}/result", headers=AS_ALPHA).json() == {"bpm": 120}


def test_listing_shows_only_your_jobs(keyed: TestClient) -> None:
    mine = {upload(keyed, wav_bytes(seed=i), headers=AS_ALPHA).json()["id"] for i in range(3)}
    theirs = upload(keyed, wav_bytes(seed=9), headers=AS_BETA).json()["id"]
    listed = {j["id"] for j in keyed.get("/v1/analyses", headers=AS_ALPHA).json()["items"]}
    assert listed == mine
    listed = [j["id"] for j in keyed.get("/v1/analyses", headers=AS_BETA).json()["items"]]
    assert listed == [theirs]


def test_idempotency_keys_are_per_api_key(keyed: TestClient) -> None:
    same = {"Idempotency-Key": "upload-1"}
    a = upload(keyed, headers={**AS_ALPHA, **same})
    b = upload(keyed, headers={**AS_BETA, **same})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_the_key_itself_is_never_stored(keyed: TestClient) -> None:
    job_id = upload(keyed, headers=AS_ALPHA).json()["id"]
    job = runtime_of(keyed).jobs.get(job_id)
    assert job.owner == owner_of(ALPHA) != owner_of(BETA)
    assert len(job.owner) == 32 and ALPHA not in job.owner
    data_dir = runtime_of(keyed).settings.data_dir
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert ALPHA.encode() not in path.read_bytes(), path


def test_per_key_limit_is_429_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=f"{ALPHA},{BETA}", max_concurrent_jobs_per_key=2)
    first = [upload(client, wav_bytes(seed=i), headers=AS_ALPHA).json()["id"] for i in range(2)]
    r = upload(client, wav_bytes(seed=5), headers=AS_ALPHA)
    body = assert_problem(r, 429, "too_many_jobs")
    assert int(r.headers["retry-after"]) > 0
    assert "EARSHOT_MAX_CONCURRENT_JOBS_PER_KEY" in body["detail"]
    assert len(stored_uploads(client)) == 2  # the refused upload was never stored
    # Another key has its own allowance.
    assert upload(client, wav_bytes(seed=6), headers=AS_BETA).status_code == 202
    # A finished (here: canceled) job frees its slot.
    assert client.delete(f"/v1/analyses/{first[0]}", headers=AS_ALPHA).status_code == 200
    assert upload(client, wav_bytes(seed=7), headers=AS_ALPHA).status_code == 202


def test_open_service_needs_no_key_and_says_so(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="earshot.api"):
        client = make_client()
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)
    job_id = upload(client).json()["id"]
    assert runtime_of(client).jobs.get(job_id).owner == ANONYMOUS
    # A key sent to an open service is ignored, not an error.
    assert client.get(f"/v1/analyses/{job_id}", headers=AS_ALPHA).status_code == 200


def test_matches_compares_whole_keys() -> None:
    keys = [ALPHA, BETA]
    assert matches(ALPHA, keys) and matches(BETA, keys)
    assert not matches(ALPHA[:-1], keys)
    assert not matches(ALPHA + " ", keys)
    assert not matches("", keys)
    assert not matches(ALPHA, [])


@pytest.mark.parametrize(
    ("host", "keys", "allowed"),
    [
        ("127.0.0.1", None, True),
        ("::1", None, True),
        ("localhost", None, True),
        ("0.0.0.0", None, False),
        ("192.168.1.10", None, False),
        ("example.com", None, False),
        ("0.0.0.0", ALPHA, True),
    ],
)
def test_an_open_service_only_listens_on_loopback(
    tmp_path: Path, host: str, keys: str | None, allowed: bool
) -> None:
    settings = Settings(data_dir=tmp_path, api_keys=keys)
    assert open_bind_allowed(settings, host) is allowed


def test_serve_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    env = {**os.environ, "EARSHOT_DATA_DIR": str(tmp_path)}
    env.pop("EARSHOT_API_KEYS", None)
    env.pop("EARSHOT_API_KEYS_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "earshot", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "127.0.0.1" in done.stderr and "EARSHOT_API_KEYS" in done.stderr


def jobs_table(client: TestClient) -> list[dict[str, object]]:
    """Every row of the jobs table, read with plain sqlite3 from the database file."""
    path = runtime_of(client).settings.effective_database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY created_at")]


def test_another_keys_identical_upload_is_not_served_from_its_cache(keyed: TestClient) -> None:
    data = wav_bytes(seed=3)
    first = upload(keyed, data, headers=AS_ALPHA).json()
    finish(keyed, first["id"], document={"bpm": 120})

    theirs = upload(keyed, data, headers=AS_BETA)
    assert theirs.status_code == 202
    # A fresh job: nothing tells beta that alpha already analysed these bytes.
    assert theirs.json()["cached"] is False and theirs.json()["status"] == "queued"
    mine = upload(keyed, data, headers=AS_ALPHA)
    assert mine.status_code == 202
    assert mine.json()["cached"] is True and mine.json()["status"] == "succeeded"

    rows = {row["id"]: row for row in jobs_table(keyed)}
    assert len(rows) == 3
    source, beta, again = rows[first["id"]], rows[theirs.json()["id"]], rows[mine.json()["id"]]
    assert beta["owner"] == owner_of(BETA) and source["owner"] == again["owner"] == owner_of(ALPHA)
    assert (beta["status"], beta["cached"], beta["result_prefix"]) == ("queued", 0, None)
    assert (again["status"], again["cached"]) == ("succeeded", 1)
    assert again["result_prefix"] == source["result_prefix"]
    # Beta's upload is kept for its own analysis; alpha's cached re-upload was dropped.
    kept = {p.name for p in stored_uploads(keyed)}
    assert beta["id"] in kept and again["id"] not in kept


# Bound on starting the server and on each upload: a hang fails the test instead of the suite.
WAIT_S = 60.0


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server on 127.0.0.1; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)


def test_concurrent_uploads_get_exactly_the_per_key_limit(tmp_path: Path) -> None:
    # Every upload passes the early check (no job exists yet) while its body is held back; the
    # bodies are released together once the server is storing all of them. Before the limit
    # was enforced inside the insert's transaction, 10 such uploads under a limit of 3 made
    # 6-10 jobs.
    uploads, limit = 10, 3
    settings = Settings(
        data_dir=tmp_path / "var", api_keys=ALPHA, max_concurrent_jobs_per_key=limit
    )
    app = create_app(settings)
    boundary = "earshot-test-boundary"
    release = threading.Event()
    answers: list[httpx.Response] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def body(i: int) -> Iterator[bytes]:
        data = wav_bytes(seed=i)
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="take {i}.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode() + data[:64]
        release.wait(WAIT_S)
        yield data[64:] + f"\r\n--{boundary}--\r\n".encode()

    def post(url: str, i: int) -> None:
        try:
            r = httpx.post(
                f"{url}/v1/analyses",
                content=body(i),
                headers={**AS_ALPHA, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=WAIT_S,
            )
            with lock:
                answers.append(r)
        except BaseException as exc:
            with lock:
                failures.append(exc)

    with served(app) as url:
        upload_dir = settings.data_dir / "blobs" / "uploads"
        clients = [threading.Thread(target=post, args=(url, i)) for i in range(uploads)]
        for c in clients:
            c.start()
        # A partial blob per upload shows the server is past its early check for each. Not an
        # assertion: if storage ever stops writing partial files, the bodies go after the bound.
        deadline = time.monotonic() + WAIT_S
        while len(list(upload_dir.rglob("*.part"))) < uploads and time.monotonic() < deadline:
            time.sleep(0.05)
        release.set()
        for c in clients:
            c.join(WAIT_S)
            assert not c.is_alive(), "an upload hung"

    assert failures == []
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [202] * limit + [429] * (uploads - limit)
    for r in answers:
        if r.status_code == 429:
            assert_problem(r, 429, "too_many_jobs")
            assert int(r.headers["retry-after"]) > 0
    accepted = {r.json()["id"] for r in answers if r.status_code == 202}

    database = settings.effective_database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT id, owner, status FROM jobs").fetchall()
    assert {row[0] for row in rows} == accepted and len(rows) == limit
    assert {(row[1], row[2]) for row in rows} == {(owner_of(ALPHA), "queued")}
    stored = sorted(p.name for p in upload_dir.rglob("*") if p.is_file())
    assert stored == sorted(accepted)  # refused uploads deleted, no partial file left
