"""Network partitions: workers, then the API, cut off from RabbitMQ and PostgreSQL (15 s, 20 s).

The partition is a loopback TCP proxy (tests/integration/proxy.py) between the process and both
servers, in two kinds: a black hole (nothing forwarded, nothing closed: what a real partition
looks like) and a reset (connections dropped, new ones refused). The evidence is read from the
servers and the disk, not from earshot: job rows with SQL, each result.json against the
sample's duration by soundfile and its bytes' SHA-256, the queues by ``rabbitmqctl`` and by
taking the messages off them.

The figures (``pytest -s``) are quoted in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import amqp
import numpy as np
import psycopg
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from api.app import create_app
from core.database import make_engine
from core.migrate import upgrade
from core.names import Queue
from core.runtime import build_runtime
from core.settings import Settings
from scripts.bench import harness

from .conftest import (
    Service,
    require_port,
    sample_files,
    service_env,
    submit_file,
    wait_for,
)
from .proxy import HOST, TcpProxy

pytestmark = pytest.mark.integration

RABBIT_PORT = 5672
PG_PORT = 5432
PARTITION_S = 15.0
# The API side: long enough for uploads started in it to be answered before it heals.
API_PARTITION_S = 20.0
# Bound on the drain after the heal (not a speed target: a hung worker fails instead of hanging).
RECOVERY_BOUND_S = 180.0
KINDS = ["black_hole", "reset"]


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class Backends:
    """A fresh vhost and database of one test, reached directly (not through a proxy)."""

    vhost: str
    database: str

    def broker_url(self, port: int = RABBIT_PORT) -> str:
        return f"amqp://guest:guest@{HOST}:{port}/{self.vhost}"

    def database_url(self, port: int = PG_PORT) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{port}/{self.database}"

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every job row, read with plain SQL."""
        dsn = f"host={HOST} port={PG_PORT} dbname={self.database} user=postgres"
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            cur = conn.execute(
                "SELECT id, status, attempts, sha256, result_prefix, finished_at, error_code "
                "FROM jobs"
            )
            names = [d.name for d in cur.description or ()]
            return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}

    def queue_depth(self) -> int:
        """Ready plus unacknowledged messages on earshot's queues, by ``rabbitmqctl``."""
        r = _rabbitmqctl(
            "list_queues", "-p", self.vhost, "--quiet", "name", "messages_ready",
            "messages_unacknowledged",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        total = 0
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith("earshot.") and parts[1].isdigit():
                total += int(parts[1]) + int(parts[2])
        return total

    def take_messages(self) -> list[str]:
        """Take every message off earshot's queues; the task ids (job ids) they carry."""
        ids: list[str] = []
        conn = amqp.Connection(f"{HOST}:{RABBIT_PORT}", virtual_host=self.vhost, connect_timeout=10)
        conn.connect()
        try:
            for queue in Queue:
                # A queue nobody published to does not exist yet (and a 404 closes a channel).
                channel = conn.channel()
                try:
                    channel.queue_declare(queue.value, passive=True)
                except amqp.exceptions.NotFound:
                    continue
                for _ in range(1000):
                    message = channel.basic_get(queue.value, no_ack=True)
                    if message is None:
                        break
                    ids.append(str(message.headers["id"]))
                channel.close()
        finally:
            conn.close()
        return ids


@pytest.fixture
def backends() -> Iterator[Backends]:
    require_port(RABBIT_PORT, "RabbitMQ")
    require_port(PG_PORT, "PostgreSQL")
    if shutil.which("rabbitmqctl") is None or _rabbitmqctl("list_vhosts").returncode != 0:
        message = "rabbitmqctl (a vhost per test, queue depths) is not usable"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI=true: integration tests must not skip)")
        pytest.skip(message)
    suffix = uuid.uuid4().hex[:10]
    vhost, database = f"earshot-partition-{suffix}", f"earshot_partition_{suffix}"
    admin = f"host={HOST} port={PG_PORT} dbname=postgres user=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    assert _rabbitmqctl("add_vhost", vhost).returncode == 0
    assert _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").returncode == 0
    found = Backends(vhost=vhost, database=database)
    upgrade(found.database_url())
    try:
        yield found
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def proxies() -> Iterator[tuple[TcpProxy, TcpProxy]]:
    """(RabbitMQ proxy, PostgreSQL proxy), healed and closed at teardown whatever happened."""
    rabbit, pg = TcpProxy((HOST, RABBIT_PORT)), TcpProxy((HOST, PG_PORT))
    try:
        yield rabbit, pg
    finally:
        rabbit.close()
        pg.close()


def partition(kind: str, *proxies: TcpProxy) -> None:
    for proxy in proxies:
        if kind == "black_hole":
            proxy.black_hole()
        else:
            proxy.cut()


def heal(*proxies: TcpProxy) -> None:
    for proxy in proxies:
        proxy.restore()


def samples() -> list[Path]:
    """12 samples with distinct bytes (no upload-cache hit) that soundfile can also read."""
    readable = [p for p in sample_files() if p.suffix != ".m4a"]
    assert len(readable) >= 12, readable
    return readable[:12]


def start_worker(env: dict[str, str], log: Path) -> Service:
    worker = Service(["worker", "--concurrency=1"], env=env, log=log)

    def ready() -> bool:
        worker.assert_alive()
        return " ready." in worker.log()

    wait_for(ready, what=f"worker {log.name} to be ready", timeout=120)
    return worker


def _result_rewritten(path: Path, finished_at: datetime) -> bool:
    return path.stat().st_mtime > finished_at.timestamp() + 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_worker_partitioned_mid_batch_resumes_and_every_job_succeeds_once(
    kind: str,
    backends: Backends,
    proxies: tuple[TcpProxy, TcpProxy],
    tmp_path: Path,
    numba_cache: Path,
) -> None:
    rabbit, pg = proxies
    blobs = tmp_path / "blobs"
    env = service_env(
        tmp_path / "var",
        numba_cache,
        broker_url=backends.broker_url(rabbit.port),
        database_url=backends.database_url(pg.port),
        blob_url=blobs.as_uri(),
        task_max_attempts="10",
    )
    workers = [start_worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    # The submitting side (as the API does) reaches both servers directly: only the workers
    # are partitioned.
    runtime = build_runtime(
        Settings(
            data_dir=tmp_path / "api",
            broker_url=backends.broker_url(),
            database_url=backends.database_url(),
            blob_url=blobs.as_uri(),
        )
    )
    try:
        files = {submit_file(runtime, path).id: path for path in samples()}

        def some_running() -> bool:
            return any(r["status"] == "running" for r in backends.rows().values())

        wait_for(some_running, what="a job running", timeout=120)
        partition(kind, rabbit, pg)
        at_cut = backends.rows()
        time.sleep(PARTITION_S)
        heal(rabbit, pg)
        healed = time.monotonic()

        def all_finished() -> bool:
            for worker in workers:
                worker.assert_alive()  # resumes by itself: no worker restarts
            rows = backends.rows()
            return all(r["finished_at"] is not None for r in rows.values())

        wait_for(all_finished, what="every job to finish after the heal", timeout=RECOVERY_BOUND_S)
        recovery_s = time.monotonic() - healed

        # Nothing left queued or unacknowledged (rabbitmqctl's counts lag a few seconds).
        deadline = time.monotonic() + 30
        while backends.queue_depth() and time.monotonic() < deadline:
            time.sleep(1.0)
        leftover = backends.queue_depth()
        rows = backends.rows()
        status_at_cut = [r["status"] for r in at_cut.values()]
        print(
            f"[worker-{kind}] {len(files)} jobs, {PARTITION_S:.0f} s partition, at the cut: "
            f"running={status_at_cut.count('running')} queued={status_at_cut.count('queued')} "
            f"succeeded={status_at_cut.count('succeeded')}; all finished {recovery_s:.1f} s "
            f"after the heal; statuses={sorted({r['status'] for r in rows.values()})} "
            f"max_attempts={max(r['attempts'] for r in rows.values())} leftover={leftover}"
        )
        assert leftover == 0
        assert set(rows) == set(files)
        for job_id, path in files.items():
            row = rows[job_id]
            assert row["status"] == "succeeded", row
            result = blobs / row["result_prefix"] / "result.json"
            document = json.loads(result.read_text())
            audio = document["audio"]
            assert audio["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), path
            assert abs(audio["duration_s"] - sf.info(path).duration) < 0.1, (path, audio)
            assert not _result_rewritten(result, row["finished_at"]), (path, row)
        # A late delivery (a message the partition held) changed no finished job.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(1.0)
        assert backends.rows() == rows
    finally:
        harness.stop_all(workers)
        runtime.close()


class Call:
    """One request in a thread, so a test can bound how long it waits for the answer."""

    def __init__(self, send: Callable[[], Any], name: str) -> None:
        self.name = name
        self.response: Any = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, args=(send,), daemon=True, name=name)
        self.thread.start()

    def _run(self, send: Callable[[], Any]) -> None:
        started = time.monotonic()
        self.response = send()
        self.seconds = time.monotonic() - started

    def wait(self, timeout: float) -> Any:
        self.thread.join(max(timeout, 0.0))
        assert self.response is not None, f"{self.name}: no answer within {timeout:.1f} s"
        return self.response


def upload(client: TestClient, key: str) -> Call:
    data = submit_bytes(key)
    return Call(
        lambda: client.post(
            "/v1/analyses",
            files={"file": (f"{key}.wav", data, "audio/wav")},
            headers={"Idempotency-Key": key},
        ),
        key,
    )


def submit_bytes(key: str) -> bytes:
    """A short WAV whose bytes differ per key (so no upload is a cache hit)."""
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    y = 0.1 * np.random.default_rng(seed).standard_normal(22050)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), 22050, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_api_partitioned_refuses_uploads_with_503_and_recovers_without_restart(
    kind: str, backends: Backends, proxies: tuple[TcpProxy, TcpProxy], tmp_path: Path
) -> None:
    rabbit, pg = proxies
    blobs = tmp_path / "blobs"
    settings = Settings(
        data_dir=tmp_path / "var",
        broker_url=backends.broker_url(rabbit.port),
        database_url=backends.database_url(pg.port),
        blob_url=blobs.as_uri(),
    )
    accepted: dict[str, str] = {}  # job id -> before / after (the partition)
    refused: list[str] = []

    def answer(call: Call, when: str, timeout: float) -> None:
        r = call.wait(timeout)
        if r.status_code in (200, 202):
            accepted[r.json()["id"]] = when
            return
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["code"] in {"broker_unavailable", "store_unavailable"}, r.text
        refused.append(f"{r.json()['code']} after {call.seconds:.1f} s")

    with TestClient(create_app(settings)) as client:
        answer(upload(client, f"{kind}-before"), "before", 60)
        assert list(accepted.values()) == ["before"]

        partition(kind, rabbit, pg)
        started = time.monotonic()
        ready = Call(lambda: client.get("/readyz"), "readyz")
        health = Call(lambda: client.get("/healthz"), "healthz")
        during = []
        for i in range(3):
            during.append(upload(client, f"{kind}-during-{i}"))
            time.sleep(1.0)
        # Every answer comes while the partition lasts: refused, not held until it heals.
        before_heal = API_PARTITION_S - 1.0
        for call in during:
            answer(call, "during", before_heal - (time.monotonic() - started))
        ready_r = ready.wait(before_heal - (time.monotonic() - started))
        health_r = health.wait(before_heal - (time.monotonic() - started))
        time.sleep(max(0.0, API_PARTITION_S - (time.monotonic() - started)))
        heal(rabbit, pg)
        healed = time.monotonic()

        # Uploads succeed again, with no restart of the API.
        first_ok_s = None
        for i in range(30):
            n = len(accepted)
            answer(upload(client, f"{kind}-after-{i}"), "after", 60)
            if len(accepted) > n:
                first_ok_s = time.monotonic() - healed
                break
            time.sleep(1.0)
        assert first_ok_s is not None, refused
        for i in range(3):
            answer(upload(client, f"{kind}-after-more-{i}"), "after", 60)
        # No worker runs here, so /readyz stays 503 for its queues; its dependencies are back.
        ready_after = client.get("/readyz").json()["checks"]

    print(
        f"[api-{kind}] {API_PARTITION_S:.0f} s partition: {len(during)} uploads during it, "
        f"refused={refused}; readyz {ready_r.status_code} {ready_r.json().get('checks')} "
        f"after {ready.seconds:.1f} s; healthz {health_r.status_code}; first 202 "
        f"{first_ok_s:.1f} s after the heal; accepted={sorted(accepted.values())}"
    )
    assert len(refused) == len(during) == 3
    assert ready_r.status_code == 503
    assert int(ready_r.headers["retry-after"]) > 0
    assert ready_r.json()["checks"]["broker"] is False
    assert ready_r.json()["checks"]["database"] is False
    assert health_r.status_code == 200
    assert ready_after == {"broker": True, "database": True, "blobs": True}
    assert sorted(accepted.values()) == ["after"] * 4 + ["before"]

    # Every 202 has its job row (queued: no worker runs here) and its message on the queue; a
    # message without a 202 (published into the partition, delivered at the heal) belongs to
    # a job marked failed, which a worker drops.
    rows = backends.rows()
    deadline = time.monotonic() + 30
    while backends.queue_depth() < len(accepted) and time.monotonic() < deadline:
        time.sleep(1.0)
    queued_ids = backends.take_messages()
    assert len(set(queued_ids)) == len(queued_ids), "a job published twice"
    for job_id in accepted:
        assert rows[job_id]["status"] == "queued", rows[job_id]
        assert job_id in queued_ids, job_id
    for job_id in set(queued_ids) - set(accepted):
        assert rows[job_id]["status"] == "failed", rows[job_id]
    for job_id, row in rows.items():
        if job_id not in accepted:
            assert row["status"] == "failed", row
    # Refused uploads keep nothing on disk.
    kept = {p.name for p in (blobs / "uploads").rglob("*") if p.is_file()}
    assert kept == set(accepted), kept ^ set(accepted)


def test_database_connections_ask_the_kernel_to_detect_a_dead_peer(backends: Backends) -> None:
    """Keepalive and TCP_USER_TIMEOUT, read back from the kernel on the pool's socket.

    The proxy above cannot show these at work (its kernel acknowledges every byte), but on a
    real partition they close a dead pooled connection instead of leaving it for hours.
    """
    engine = make_engine(backends.database_url())
    try:
        with engine.connect() as conn:
            fd = conn.connection.dbapi_connection.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:
                options = {
                    "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                }
    finally:
        engine.dispose()
    assert options == {
        "keepalive": 1,
        "idle": 30,
        "interval": 10,
        "count": 3,
        "user_timeout_ms": 15000,
    }
