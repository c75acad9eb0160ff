"""Shared fixtures of the end-to-end tests: real processes, real servers, no mocks.

A server that is absent makes its tests skip locally and FAIL under ``CI=true``, so CI never
passes by silently testing nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.jobs import Job, new_job_id
from core.names import Priority, upload_key
from core.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aiff", ".aif"}

# Upper bound on any wait for a job or a process. Not an assertion about speed: a bound so a
# broken service fails the test instead of hanging the suite.
WAIT_S = 180.0


def require_port(port: int, name: str) -> None:
    """Skip when nothing listens on 127.0.0.1:``port``; fail instead when ``CI`` is set."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI=true: integration tests must not skip)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for[T](probe: Callable[[], T | None], *, what: str, timeout: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.1)


def sample_files() -> list[Path]:
    """Every audio file under samples/ (one per format and signal)."""
    return sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


class Service:
    """An ``earshot`` subcommand running as a child process with its own log file."""

    def __init__(
        self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path = REPO
    ) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "earshot", *args],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group, so stop() also reaches Celery's pool processes.
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"{self.process.args} exited with {code}:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        return int(self.process.returncode)


def service_env(data_dir: Path, numba_cache: Path, **settings: str) -> dict[str, str]:
    """The environment of a child process: this checkout importable, EARSHOT_* as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["EARSHOT_DATA_DIR"] = str(data_dir)
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    env["EARSHOT_LOG_LEVEL"] = "INFO"
    env.update({f"EARSHOT_{k.upper()}": v for k, v in settings.items()})
    return env


@pytest.fixture(scope="session")
def numba_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JIT cache for every worker of the session: only the first start compiles."""
    return tmp_path_factory.mktemp("numba-cache")


def submit_file(runtime: Runtime, path: Path, *, priority: Priority = Priority.INTERACTIVE) -> Job:
    """Store a file as an upload, create its job and publish it, as the API does."""
    data = path.read_bytes()
    job_id = new_job_id()
    runtime.blobs.put_bytes(upload_key(job_id), data)
    job, _ = runtime.jobs.create(
        job_id=job_id,
        upload_key=upload_key(job_id),
        filename=path.name,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        profile="standard",
        priority=priority.value,
    )
    runtime.publish(job)
    return job


def wait_finished(
    runtime: Runtime,
    job_id: str,
    *,
    timeout: float = WAIT_S,
    services: tuple[Service, ...] = (),
) -> Job:
    """The job once finished; fails at once (with its log) if one of ``services`` died."""

    def probe() -> Job | None:
        for service in services:
            service.assert_alive()
        job = runtime.jobs.get(job_id)
        return job if job.status.finished else None

    return wait_for(probe, what=f"job {job_id} to finish", timeout=timeout)


def make_long_wav(path: Path, seconds: float) -> Path:
    """Seconds of a noisy click track: slow enough to catch an analysis while it runs."""
    import numpy as np
    import soundfile as sf

    sr = 22050
    rng = np.random.default_rng(7)
    y = 0.05 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
    y[:: sr // 2] += 0.9
    sf.write(path, y, sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh RabbitMQ vhost for this run, so runs never see each other's messages."""
    require_port(5672, "RabbitMQ")
    ctl = shutil.which("rabbitmqctl")
    vhost = f"earshot_test_{uuid.uuid4().hex[:12]}"
    created = False
    if ctl:
        add = subprocess.run([ctl, "add_vhost", vhost], capture_output=True, timeout=60)
        if add.returncode == 0:
            subprocess.run(
                [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            created = True
    if not created:
        # No rabbitmqctl here: share the default vhost. Stale messages of other runs carry
        # job ids unknown to this run's fresh database, and the task drops those.
        vhost = ""
    yield vhost
    if created and ctl:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database created for this session and dropped after it."""
    with fresh_postgres_database() as url:
        yield url


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """An empty PostgreSQL database, dropped on exit (for a test that must see no other jobs,
    e.g. none whose result the upload cache would reuse)."""
    require_port(5432, "PostgreSQL")
    import psycopg

    name = f"earshot_test_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 dbname=postgres user=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
