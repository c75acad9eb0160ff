"""The scaled-out mode end to end: RabbitMQ (its own vhost per run), PostgreSQL (a database
per session, migrated by `earshot migrate`), and one `earshot worker` process per queue."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.names import RESULT_JSON, JobStatus, Priority, Queue
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from scripts.bench import harness
from tests.integration.conftest import (
    REPO,
    Service,
    make_long_wav,
    sample_files,
    service_env,
    submit_file,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.integration

FLOOD = 8


class Cluster:
    def __init__(self, settings: Settings, env: dict[str, str], root: Path) -> None:
        self.settings = settings
        self.env = env
        self.root = root


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    numba_cache: Path,
    rabbitmq_vhost: str,
    postgres_url: str,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("scaled")
    broker_url = f"amqp://guest:guest@127.0.0.1:5672/{rabbitmq_vhost}"
    env = service_env(
        root / "var",
        numba_cache,
        broker_url=broker_url,
        database_url=postgres_url,
        blob_url=(root / "blobs").as_uri(),
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "earshot", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    workers = [
        Service(["worker", f"--queues={q.value}"], env=env, log=root / f"{q.name.lower()}.log")
        for q in Queue
    ]
    settings = Settings(
        data_dir=root / "var",
        broker_url=broker_url,
        database_url=postgres_url,
        blob_url=(root / "blobs").as_uri(),
    )
    runtime = build_runtime(settings)
    try:
        # One tiny job per queue proves each pool is up (and warmed) before any test starts.
        for queue in Queue:
            priority = Priority.BATCH if queue is Queue.BATCH else Priority.INTERACTIVE
            job = submit_file(runtime, REPO / "samples" / "sine440.wav", priority=priority)
            done = wait_finished(runtime, job.id, services=tuple(workers))
            assert done.status is JobStatus.SUCCEEDED, done.error_message
        yield Cluster(settings, env, root)
    finally:
        runtime.close()
        harness.stop_all(workers)


@pytest.fixture
def runtime(cluster: Cluster) -> Iterator[Runtime]:
    rt = build_runtime(cluster.settings)
    yield rt
    rt.close()


def test_every_sample_format_is_analysed(runtime: Runtime) -> None:
    samples = sample_files()
    assert samples, "samples/ is empty (make samples)"
    jobs = {path: submit_file(runtime, path) for path in samples}

    for path, job in jobs.items():
        done = wait_finished(runtime, job.id)
        assert done.status is JobStatus.SUCCEEDED, (path.name, done.error_code, done.error_message)
        document = json.loads(runtime.blobs.get_bytes((done.result_prefix or "") + RESULT_JSON))
        if path.stem == "click120_cmajor":
            assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3), path.name


def test_interactive_job_overtakes_a_batch_flood(runtime: Runtime, tmp_path: Path) -> None:
    long_clip = make_long_wav(tmp_path / "long.wav", 60)
    flood = [submit_file(runtime, long_clip, priority=Priority.BATCH) for _ in range(FLOOD)]
    urgent = submit_file(runtime, REPO / "samples" / "click120_cmajor.wav")

    done = wait_finished(runtime, urgent.id)
    batch_states = [runtime.jobs.get(job.id).status for job in flood]

    assert done.status is JobStatus.SUCCEEDED
    # The interactive pool never waits behind batch work: when it is done, most of the flood
    # is still queued behind the single batch process.
    assert batch_states.count(JobStatus.QUEUED) >= FLOOD // 2, batch_states
    finished = [wait_finished(runtime, job.id) for job in flood]
    assert all(job.status is JobStatus.SUCCEEDED for job in finished)
    assert sum(job.finished_at > done.finished_at for job in finished) >= FLOOD // 2  # type: ignore[operator]


def test_cancel_of_a_running_job(runtime: Runtime, tmp_path: Path) -> None:
    # Just under EARSHOT_CHUNK_MIN_DURATION_S (1200 s), so one task analyses it whole: ~2 s of
    # work on a quiet core, long enough to be seen running and canceled.
    long_clip = make_long_wav(tmp_path / "long.wav", 1150)
    job = submit_file(runtime, long_clip)

    def running() -> bool:
        current = runtime.jobs.get(job.id)
        assert not current.status.finished, current
        return current.status is JobStatus.RUNNING and current.percent > 0

    wait_for(running, what="the long job to report progress")
    canceled = runtime.jobs.cancel(job.id)
    assert canceled.status is JobStatus.CANCELED

    # The worker notices at its next progress write and throws the upload away.
    wait_for(
        lambda: not runtime.blobs.exists(job.upload_key or ""),
        what="the worker to drop the canceled job's upload",
    )
    after = runtime.jobs.get(job.id)
    assert after.status is JobStatus.CANCELED
    assert after.percent < 100.0
    assert not runtime.blobs.exists(f"results/{job.id}/{RESULT_JSON}")
    # The pool is free again: the next interactive job is analysed.
    follow_up = submit_file(runtime, REPO / "samples" / "sine440.ogg")
    assert wait_finished(runtime, follow_up.id).status is JobStatus.SUCCEEDED


def test_publisher_and_workers_reconnect_after_the_broker_drops_them(
    cluster: Cluster, rabbitmq_vhost: str
) -> None:
    """RabbitMQ closes every connection of the vhost (as a restart does): the next publish from
    the same process is still accepted, and the workers reconnect and analyse it."""
    ctl = shutil.which("rabbitmqctl")
    if not ctl or not rabbitmq_vhost:
        pytest.skip("needs rabbitmqctl and a vhost of this run")
    runtime = build_runtime(cluster.settings)
    try:
        first = submit_file(runtime, REPO / "samples" / "sine440.flac")  # opens a pooled link
        assert wait_finished(runtime, first.id).status is JobStatus.SUCCEEDED
        subprocess.run(
            [ctl, "close_all_connections", "--vhost", rabbitmq_vhost, "earshot test: restart"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # The publish finds its pooled connection dead, reconnects and sends: no 503.
        again = submit_file(runtime, REPO / "samples" / "sine440.mp3")
        assert wait_finished(runtime, again.id).status is JobStatus.SUCCEEDED
    finally:
        runtime.close()
