"""Shared fixtures of the end-to-end tests: real processes, real servers, no mocks.

A server that is absent makes its tests skip locally and FAIL under ``CI=true``, so CI never
passes by silently testing nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.jobs import Job, new_job_id
from core.names import Priority, upload_key
from core.runtime import Runtime
from scripts.bench import harness

# Re-exported: the integration tests import it from here.
from scripts.bench.harness import free_port as free_port
from tests.conftest import seed_numba_cache

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aiff", ".aif"}

# Upper bound on any wait for a job or a process. Not an assertion about speed: a bound so a
# broken service fails the test instead of hanging the suite.
WAIT_S = 180.0


def require_port(port: int, name: str) -> None:
    """Skip when nothing listens on 127.0.0.1:``port``; fail instead when ``CI`` is set."""
    if harness.port_open(port):
        return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI=true: integration tests must not skip)")
    pytest.skip(message)


def wait_for[T](probe: Callable[[], T | None], *, what: str, timeout: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    try:
        return harness.wait_for(probe, what=what, timeout=timeout)
    except harness.WaitTimeout as exc:
        message = str(exc)
    pytest.fail(message)


def sample_files() -> list[Path]:
    """Every audio file under samples/ (one per format and signal)."""
    return sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


class Service(harness.Child):
    """An ``earshot`` subcommand running as a child process with its own log file
    (scripts/bench/harness.py's `Child`, failing the test instead of raising)."""

    def __init__(
        self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path = REPO
    ) -> None:
        super().__init__(args, env=env, log_path=log, cwd=cwd)

    def assert_alive(self) -> None:
        message = self.exit_message()
        if message is not None:
            pytest.fail(message)


def service_env(data_dir: Path, numba_cache: Path, **settings: str) -> dict[str, str]:
    """The environment of a child process: this checkout importable, EARSHOT_* as given."""
    return harness.child_env(data_dir, numba_cache, code=REPO, **settings)


@pytest.fixture(scope="session")
def numba_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JIT cache for every worker of the session, warm before the first one starts.

    Seeded from the cache `make install` warmed, then brought up to this code by one
    `earshot warmup` (seconds when the seed is current; a full compile otherwise), so no
    test's setup pays the JIT and no worker pools take turns compiling. Separate from this
    process's own cache (tests/conftest.py): workers and tests never compile into one folder.
    """
    cache = seed_numba_cache(tmp_path_factory.mktemp("numba-cache"))
    harness.run_earshot(
        ["warmup"], env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, cwd=REPO, timeout=600
    )
    return cache


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
    with harness.postgres_database() as url:
        yield url
