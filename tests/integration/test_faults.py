"""Fault injection against the real RabbitMQ and PostgreSQL with real worker processes.

Every test submits jobs through the real API (in-process TestClient on the same settings the
workers use), breaks something the way production breaks — SIGKILL, a broker restart, a dropped
database connection, an unreachable broker — and then counts what happened to each job:
submitted, succeeded, failed, lost (must be 0), duplicated (must be 0). The counts are printed
(``pytest -s``) and docs/reliability.md quotes them.

Isolation: a fresh PostgreSQL database and a fresh RabbitMQ vhost per run, both dropped at the
end, so a run never sees another run's jobs or messages.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from core.jobs import Job, JobRow
from core.names import RESULT_JSON, JobStatus
from core.runtime import Runtime
from core.settings import Settings

from .proxy import TcpProxy

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
RABBIT_PORT = 5672
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql://postgres@{HOST}:{PG_PORT}/test"
REPO = Path(__file__).resolve().parents[2]
# numba's JIT cache outlives the run: a cold worker spends ~30 s compiling, a warm one ~3 s.
# How long a scenario may take to drain before unfinished jobs are counted as lost.
DRAIN_S = 150.0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def _require(ok: bool, what: str) -> None:
    """Skip locally, fail under CI=true: a missing server is never a silent pass."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} not available")


def _rabbitmqctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


# -- services: a fresh database and vhost per run ------------------------------------------


@dataclass(frozen=True)
class Services:
    broker_url: str
    database_url: str
    vhost: str
    database: str


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    _require(_port_open(RABBIT_PORT), f"RabbitMQ on {HOST}:{RABBIT_PORT}")
    _require(_port_open(PG_PORT), f"PostgreSQL on {HOST}:{PG_PORT}")
    try:
        usable = _rabbitmqctl("list_vhosts", timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        usable = False
    _require(usable, "rabbitmqctl (vhosts and the broker restart test need it)")

    suffix = uuid.uuid4().hex[:10]
    vhost, database = f"earshot-faults-{suffix}", f"earshot_faults_{suffix}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    assert _rabbitmqctl("add_vhost", vhost).returncode == 0
    assert _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").returncode == 0
    database_url = f"postgresql+psycopg://postgres@{HOST}:{PG_PORT}/{database}"
    from core.migrate import upgrade

    upgrade(database_url)
    try:
        yield Services(
            broker_url=f"amqp://guest:guest@{HOST}:{RABBIT_PORT}/{vhost}",
            database_url=database_url,
            vhost=vhost,
            database=database,
        )
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# -- real worker processes -------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the prefork pool processes of a Celery worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class Worker:
    """``earshot worker`` as a real process (own process group), with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "earshot", "worker", "--concurrency=1"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        marker = f"--- start {self.starts} ---"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if " ready." in text.rsplit(marker, 1)[-1]:
                return
            assert self.proc is not None and self.proc.poll() is None, text[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.log()[-3000:]}")

    def pool(self) -> list[int]:
        return _children(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def kill_pool(self) -> int:
        """SIGKILL the pool processes (the task dies mid-analysis); return how many."""
        killed = 0
        for pid in self.pool():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    def kill_all(self) -> None:
        """SIGKILL the worker and its pool at once, as the OOM killer or a power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill_all()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    settings: Settings
    client: TestClient
    workers: list[Worker]
    make_worker: Callable[..., Worker]

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.client.app.state.runtime  # type: ignore[attr-defined]
        return runtime


@pytest.fixture
def cluster(
    services: Services, tmp_path: Path, numba_cache: Path
) -> Iterator[Callable[..., Cluster]]:
    """Build the API plus ``n_workers`` real workers; everything is stopped at teardown."""
    made: list[Cluster] = []

    def make(
        *, n_workers: int = 2, max_attempts: int = 3, worker_database_url: str | None = None
    ) -> Cluster:
        data_dir = tmp_path / "var"
        settings = Settings(
            data_dir=data_dir,
            broker_url=services.broker_url,
            database_url=services.database_url,
            blob_url=(tmp_path / "blobs").as_uri(),
            task_max_attempts=max_attempts,
        )
        env = {
            **os.environ,
            "EARSHOT_DATA_DIR": str(data_dir),
            "EARSHOT_BROKER_URL": services.broker_url,
            "EARSHOT_DATABASE_URL": worker_database_url or services.database_url,
            "EARSHOT_BLOB_URL": settings.effective_blob_url,
            "EARSHOT_TASK_MAX_ATTEMPTS": str(max_attempts),
            "EARSHOT_LOG_LEVEL": "INFO",
            "NUMBA_CACHE_DIR": str(numba_cache),
            "PYTHONPATH": str(REPO),
        }

        def make_worker() -> Worker:
            return Worker(env, tmp_path / f"worker{len(cluster.workers)}.log")

        client = TestClient(create_app(settings))
        client.__enter__()
        cluster = Cluster(settings=settings, client=client, workers=[], make_worker=make_worker)
        made.append(cluster)
        for _ in range(n_workers):
            worker = make_worker()
            cluster.workers.append(worker)
            worker.start()
        for worker in cluster.workers:
            worker.wait_ready()
        return cluster

    yield make
    for cluster in made:
        for worker in cluster.workers:
            worker.stop()
        cluster.client.__exit__(None, None, None)


# -- jobs and the tally ------------------------------------------------------------------------


def noise_wav(seconds: float, seed: int) -> bytes:
    """``seconds`` of quiet noise; every seed gives other bytes (so no job is a cache hit)."""
    sr = 22050
    y = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class Tally:
    scenario: str
    submitted: int = 0
    refused: int = 0  # answered 503: never accepted, the client was told to retry
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"[{self.scenario}] submitted={self.submitted} refused={self.refused} "
            f"succeeded={self.succeeded} failed={self.failed} lost={self.lost} "
            f"duplicated={self.duplicated} failures={self.failures} {' '.join(self.notes)}"
        )


class Submitter:
    """Posts jobs through the API, remembering what it was promised (202) per upload."""

    def __init__(self, cluster: Cluster, scenario: str) -> None:
        self.cluster = cluster
        self.tally = Tally(scenario)
        self.accepted: dict[str, str] = {}  # Idempotency-Key -> job id answered with 202
        self.seed = random.Random(scenario).randrange(1 << 30)

    def submit(self, seconds: float) -> str | None:
        self.seed += 1
        key = f"{self.tally.scenario}-{self.seed}"
        self.tally.submitted += 1
        r = self.cluster.client.post(
            "/v1/analyses",
            files={"file": (f"{key}.wav", noise_wav(seconds, self.seed), "audio/wav")},
            data={"profile": "fast"},
            headers={"Idempotency-Key": key},
        )
        if r.status_code == 503:
            assert r.headers["content-type"] == "application/problem+json"
            assert int(r.headers["retry-after"]) > 0
            self.tally.refused += 1
            return None
        assert r.status_code == 202, r.text
        self.accepted[key] = r.json()["id"]
        return str(r.json()["id"])

    def jobs(self) -> list[Job]:
        return [self.cluster.runtime.jobs.get(job_id) for job_id in self.accepted.values()]

    def active(self) -> dict[str, tuple[str, int]]:
        """Unfinished accepted jobs as ``{id: (status, attempts)}``, in one query (reading
        every job one by one grew slow enough, with a few hundred, to miss short tasks)."""
        with self.cluster.runtime.jobs.session() as session:
            rows = session.execute(
                select(JobRow.id, JobRow.status, JobRow.attempts).where(
                    JobRow.id.in_(list(self.accepted.values())),
                    JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                )
            ).all()
        return {job_id: (status, int(attempts)) for job_id, status, attempts in rows}

    def drain(self, timeout_s: float = DRAIN_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(job.status.finished for job in self.jobs()):
                return
            time.sleep(0.3)

    def count(self, services: Services) -> Tally:
        """Count what became of every accepted job; lost and duplicated must end at 0."""
        tally, runtime = self.tally, self.cluster.runtime
        # Nothing may stay on the queues: a message left there would run a finished job again.
        # rabbitmqctl's counts lag by up to the broker's statistics interval (5 s), so wait for
        # them to settle, then check that whatever was consumed meanwhile changed no job.
        before = {job.id: job for job in self.jobs()}
        deadline = time.monotonic() + 60
        while queue_depth(services) and time.monotonic() < deadline:
            time.sleep(1.0)
        leftover = queue_depth(services)
        if leftover:
            tally.notes.append(f"never_drained={leftover}")
            tally.duplicated += leftover
        for job in self.jobs():
            if job != before[job.id]:
                tally.duplicated += 1  # a redelivery moved a finished job: it ran again
            if job.status is JobStatus.SUCCEEDED:
                assert job.result_prefix
                result = runtime.blobs.local_path(job.result_prefix + RESULT_JSON)
                with contextlib.ExitStack() as stack:
                    try:
                        path = stack.enter_context(result)
                    except Exception:
                        tally.lost += 1  # "succeeded" with no stored result: the result is lost
                        continue
                    # Exactly once in effect: nothing rewrote the result after the job finished.
                    assert job.finished_at is not None
                    if path.stat().st_mtime > job.finished_at.timestamp() + 1.0:
                        tally.duplicated += 1
                tally.succeeded += 1
            elif job.status is JobStatus.FAILED:
                tally.failed += 1
                code = job.error_code or "?"
                tally.failures[code] = tally.failures.get(code, 0) + 1
            else:
                tally.lost += 1  # accepted, yet still queued/running after the drain
        # One job per accepted upload: a retried or redelivered request never made a second.
        with runtime.jobs.session() as session:
            rows = session.execute(
                select(JobRow.idempotency_key, func.count())
                .where(JobRow.idempotency_key.in_(list(self.accepted)))
                .group_by(JobRow.idempotency_key)
            ).all()
        tally.duplicated += sum(n - 1 for _, n in rows if n > 1)
        return tally


def queue_depth(services: Services) -> int:
    r = _rabbitmqctl("list_queues", "-p", services.vhost, "--quiet", "name", "messages")
    total = 0
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0].startswith("earshot."):
            total += int(parts[1])
    return total


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- scenarios ---------------------------------------------------------------------------------


def test_sigkill_mid_task_is_redelivered_and_finishes_once(
    services: Services, cluster: Callable[..., Cluster]
) -> None:
    """Workers SIGKILLed over and over while they analyse: every job still ends exactly once."""
    c = cluster(n_workers=2, max_attempts=20)
    sub = Submitter(c, "sigkill")
    for _ in range(24):
        sub.submit(seconds=60.0)
    kills = whole = 0
    # Kill only on a fresh claim: a (job, attempt) running now that no earlier kill saw. A job
    # whose process died stays "running" in the store until its redelivery claims it again, so
    # "some job is running" alone kept killing idle pools (and restarting whole workers) on a
    # slow machine, where each replacement takes longer than the next kill. Each job is killed
    # on at most its first `kills_per_job` attempts, far below max_attempts, and the storm
    # stops after `max_events` kills, so every job can finish.
    kills_per_job, max_events = 3, 12
    events = 0
    seen: set[tuple[str, int]] = set()
    unexpected: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for worker in c.workers:
            if worker.proc is not None and worker.proc.poll() is not None:
                # Nothing here stops a worker: one that exited did so on its own.
                unexpected.append(f"exit {worker.proc.returncode}:\n{worker.log()[-3000:]}")
                worker.start()
        active = sub.active()
        if not active:
            if kills + whole >= 3 and any(j.attempts > 1 for j in sub.jobs()):
                break
            # Everything finished before enough kills landed mid-task: send another wave.
            for _ in range(8):
                sub.submit(seconds=60.0)
            continue
        fresh = {
            (job_id, attempts)
            for job_id, (status, attempts) in active.items()
            if status == JobStatus.RUNNING.value and attempts <= kills_per_job
        } - seen
        if not fresh or events >= max_events:
            time.sleep(0.05)
            continue
        seen |= fresh
        events += 1
        busy = [w for w in c.workers if w.pool()]
        if events % 4 == 0 and busy:
            # The whole worker dies: RabbitMQ hands its unacknowledged message to the other.
            victim = random.Random(kills + whole).choice(busy)
            victim.kill_all()
            whole += 1
            victim.start()
        else:
            # Every pool at once: whichever process holds the running job dies with it.
            kills += sum(w.kill_pool() for w in busy)
    sub.drain()
    tally = sub.count(services)
    tally.notes.append(f"pool_kills={kills} worker_kills={whole} fresh_claims={len(seen)}")
    print(tally.line())
    logs = "\n".join(f"--- worker {i} ---\n{w.log()[-4000:]}" for i, w in enumerate(c.workers))
    assert not unexpected, "a worker exited by itself:\n" + "\n".join(unexpected)
    assert kills + whole >= 3, "the scenario never caught a task running"
    assert tally.lost == 0 and tally.duplicated == 0, f"{tally.line()}\n{logs}"
    assert tally.succeeded == tally.submitted
    redelivered = [j for j in sub.jobs() if j.attempts > 1]
    assert redelivered, "no job was redelivered: nothing was killed mid-task"


def test_a_file_that_kills_the_worker_every_time_fails_after_max_attempts(
    services: Services, cluster: Callable[..., Cluster]
) -> None:
    c = cluster(n_workers=1, max_attempts=3)
    sub = Submitter(c, "poison")
    # A client retries a 503 as told (Retry-After); the job must be accepted in a few tries.
    job_id = None
    for _ in range(5):
        if (job_id := sub.submit(seconds=120.0)) is not None:
            break
        time.sleep(1.0)
    assert job_id is not None
    worker = c.workers[0]
    killed_attempts: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = c.runtime.jobs.get(job_id)
        if job.status.finished:
            break
        # This file "kills the worker every time": each delivery dies mid-analysis.
        # Only deliveries within the limit are killed: the delivery after the last allowed
        # attempt must find the limit exceeded and fail the job by itself (killing it too
        # would only count one more attempt).
        running = (
            job.status is JobStatus.RUNNING
            and job.attempts <= 3
            and job.attempts not in killed_attempts
        )
        if running and worker.kill_pool():
            killed_attempts.add(job.attempts)
        time.sleep(0.05)
    tally = sub.count(services)
    print(tally.line())
    job = c.runtime.jobs.get(job_id)
    assert job.status is JobStatus.FAILED, job
    assert job.error_code == "worker_lost"
    assert sorted(killed_attempts) == [1, 2, 3]
    assert job.attempts == 4  # the fourth delivery only records the failure
    assert "3" in (job.error_message or "")
    assert not c.runtime.blobs.exists(job.upload_key or "")
    assert tally.lost == 0 and tally.duplicated == 0


def test_rabbitmq_restart_loses_no_job(services: Services, cluster: Callable[..., Cluster]) -> None:
    c = cluster(n_workers=2, max_attempts=5)
    sub = Submitter(c, "broker-restart")
    for _ in range(12):
        sub.submit(seconds=40.0)
    wait_for(lambda: any(j.status is JobStatus.RUNNING for j in sub.jobs()), 60, "a running job")
    # The broker is shared with other test runs on this machine: down as briefly as possible,
    # and always started again.
    try:
        assert _rabbitmqctl("stop_app").returncode == 0
        # While it is down, an upload is refused with 503 (never a 202 for an unqueued job).
        assert sub.submit(seconds=5.0) is None
        time.sleep(2.0)
    finally:
        started = _rabbitmqctl("start_app")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: _port_open(RABBIT_PORT), 60, "RabbitMQ to listen again")
    # The API reconnects by itself: new uploads are queued again without a restart.
    deadline = time.monotonic() + 30
    while sub.submit(seconds=5.0) is None and time.monotonic() < deadline:
        time.sleep(1.0)
    for _ in range(3):
        assert sub.submit(seconds=5.0) is not None
    sub.drain()
    tally = sub.count(services)
    print(tally.line())
    assert tally.lost == 0 and tally.duplicated == 0
    assert tally.succeeded == len(sub.accepted)
    assert tally.refused >= 1
    # No half-written upload, and no upload of a refused job: only accepted jobs keep theirs.
    kept = {p.name for p in _upload_files(c)}
    assert kept <= set(sub.accepted.values()), kept - set(sub.accepted.values())


def test_database_blip_is_retried_and_no_job_succeeds_without_its_result(
    services: Services, cluster: Callable[..., Cluster]
) -> None:
    proxy = TcpProxy((HOST, PG_PORT))
    try:
        worker_db = services.database_url.replace(f":{PG_PORT}/", f":{proxy.port}/")
        c = cluster(n_workers=2, max_attempts=5, worker_database_url=worker_db)
        sub = Submitter(c, "db-blip")
        for _ in range(12):
            sub.submit(seconds=40.0)
        wait_for(
            lambda: any(j.status is JobStatus.RUNNING for j in sub.jobs()), 60, "a running job"
        )
        for _ in range(2):
            proxy.cut()
            time.sleep(3.0)
            proxy.restore()
            time.sleep(2.0)
        sub.drain()
        tally = sub.count(services)
        retried = sum(w.log().count("transient error, retry") for w in c.workers)
        tally.notes.append(f"task_retries={retried}")
        print(tally.line())
        assert tally.lost == 0 and tally.duplicated == 0
        assert tally.succeeded == tally.submitted, tally.failures
    finally:
        proxy.close()


class SilentListener:
    """Accepts TCP connections and never says a word: a hung broker, not a refused one."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _upload_files(c: Cluster) -> list[Path]:
    root = Path(c.settings.effective_blob_url.removeprefix("file://")) / "uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("broker", ["refused", "silent"])
def test_broker_unreachable_at_upload_is_503_and_keeps_nothing(
    services: Services, tmp_path: Path, broker: str
) -> None:
    silent = SilentListener() if broker == "silent" else None
    port = silent.port if silent else _closed_port()
    settings = Settings(
        data_dir=tmp_path / "var",
        broker_url=f"amqp://guest:guest@{HOST}:{port}//",
        database_url=services.database_url,
        blob_url=(tmp_path / "blobs").as_uri(),
    )
    answered: dict[str, object] = {}
    try:
        with TestClient(create_app(settings)) as client:

            def post() -> None:
                started = time.monotonic()
                answered["response"] = client.post(
                    "/v1/analyses",
                    files={"file": ("a.wav", noise_wav(1.0, 7), "audio/wav")},
                )
                answered["seconds"] = time.monotonic() - started

            # A hang guard, not a speed target: the promise is an answer "within a few
            # seconds"; a request still open after 60 s means it would hang forever.
            thread = threading.Thread(target=post, daemon=True)
            thread.start()
            thread.join(60)
            assert "response" in answered, f"no answer within 60 s with a {broker} broker"
            r = answered["response"]
            assert r.status_code == 503, r.text  # type: ignore[attr-defined]
            body = r.json()  # type: ignore[attr-defined]
            assert body["code"] == "broker_unavailable"
            assert int(r.headers["retry-after"]) > 0  # type: ignore[attr-defined]
            job = client.app.state.runtime.jobs.get(body["job_id"])  # type: ignore[attr-defined]
            assert job.status is JobStatus.FAILED  # never left "queued" without a message
            root = tmp_path / "blobs" / "uploads"
            assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))
            print(f"[broker-{broker}] 503 after {answered['seconds']:.1f} s, no upload kept")
    finally:
        if silent:
            silent.close()
