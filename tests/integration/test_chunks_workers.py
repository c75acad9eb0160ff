"""Chunked analysis through a real `earshot worker` with two pool processes (issue #6).

A 3-minute file with chunks of 50 s (4 chunks) goes through the broker like any upload: the
parent task plans and publishes the chunks, both pool processes analyse them, the last one
merges. Scaled-out (RabbitMQ + PostgreSQL) and embedded (filesystem:// + SQLite) alike, the
job must end succeeded with one result equal to the single pass's tempo and key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from analysis import Analysis, analyze_file
from core.jobs import JobChunkRow, JobRow
from core.names import (
    ANALYZE_CHUNK_TASK,
    CHUNKS_DIR,
    FRAMES_CSV,
    FRAMES_NPZ,
    RESULT_JSON,
    JobStatus,
    Priority,
    Queue,
)
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from tests.analysis.test_chunks import c_major_clicks
from tests.integration.conftest import REPO, Service, service_env, submit_file, wait_finished

pytestmark = pytest.mark.integration

# 180 s in chunks of 50 s: 4 chunks, more than the two pool processes, so one of them runs
# several and the merge happens in whichever stores the last.
CHUNK_SETTINGS = {"chunk_min_duration_s": "60", "chunk_duration_s": "50", "log_format": "json"}
CHUNKS = 4


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(20240601)
    return c_major_clicks(tmp_path_factory.mktemp("chunks-workers") / "long.wav", rng)


@pytest.fixture(scope="module")
def single(long_file: Path) -> Analysis:
    return analyze_file(long_file)


def start_worker(env: dict[str, str], log: Path) -> Service:
    """Two pool processes on the analysis queues; plots are another pool's work."""
    queues = f"{Queue.INTERACTIVE.value},{Queue.BATCH.value}"
    return Service(["worker", f"--queues={queues}", "--concurrency=2"], env=env, log=log)


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "earshot", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def scaled_out(
    tmp_path_factory: pytest.TempPathFactory,
    numba_cache: Path,
    rabbitmq_vhost: str,
    postgres_url: str,
) -> Iterator[tuple[Runtime, Service]]:
    root = tmp_path_factory.mktemp("chunks-scaled")
    broker_url = f"amqp://guest:guest@127.0.0.1:5672/{rabbitmq_vhost}"
    blob_url = (root / "blobs").as_uri()
    env = service_env(
        root / "var",
        numba_cache,
        broker_url=broker_url,
        database_url=postgres_url,
        blob_url=blob_url,
        **CHUNK_SETTINGS,
    )
    migrate(env)
    settings = Settings(
        data_dir=root / "var", broker_url=broker_url, database_url=postgres_url, blob_url=blob_url
    )
    runtime = build_runtime(settings)
    # The session's vhost and database are shared with other modules, whose unfinished jobs
    # (a batch flood left queued) would otherwise be analysed first: cancelled, their
    # messages are dropped on delivery.
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        for job in runtime.jobs.list(status=status, limit=1000)[0]:
            runtime.jobs.cancel(job.id)
    worker = start_worker(env, root / "worker.log")
    try:
        yield runtime, worker
    finally:
        runtime.close()
        worker.stop()


@pytest.fixture(scope="module")
def embedded(
    tmp_path_factory: pytest.TempPathFactory, numba_cache: Path
) -> Iterator[tuple[Runtime, Service]]:
    root = tmp_path_factory.mktemp("chunks-embedded")
    env = service_env(root / "var", numba_cache, **CHUNK_SETTINGS)
    migrate(env)
    runtime = build_runtime(Settings(data_dir=root / "var"))
    worker = start_worker(env, root / "worker.log")
    try:
        yield runtime, worker
    finally:
        runtime.close()
        worker.stop()


def chunk_spans(log: str, job_id: str) -> dict[int, tuple[float, float]]:
    """(start, end) in epoch seconds of each chunk task of ``job_id`` that succeeded."""
    spans = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        data = entry.get("data") or {}
        if data.get("name") != ANALYZE_CHUNK_TASK or "runtime" not in data:
            continue
        if not str(data["id"]).startswith(f"{job_id}-"):
            continue
        end = datetime.fromisoformat(entry["ts"]).timestamp()
        spans[int(str(data["id"]).rsplit("-", 1)[1])] = (end - float(data["runtime"]), end)
    return spans


@pytest.mark.parametrize("mode", ["scaled_out", "embedded"])
def test_long_file_is_analysed_in_chunks_by_two_pool_processes(
    mode: str, request: pytest.FixtureRequest, long_file: Path, single: Analysis
) -> None:
    runtime, worker = request.getfixturevalue(mode)

    job = submit_file(runtime, long_file, priority=Priority.BATCH)
    done = wait_finished(runtime, job.id, services=(worker,))

    assert done.status is JobStatus.SUCCEEDED, (done.error_code, done.error_message)
    with runtime.jobs.session() as session:
        row = session.get(JobRow, job.id)
        assert row is not None
        assert (row.chunks_total, row.chunks_done) == (CHUNKS, CHUNKS)
        chunks = session.scalars(select(JobChunkRow).where(JobChunkRow.job_id == job.id)).all()
        assert sorted(c.idx for c in chunks) == list(range(CHUNKS))
        assert all(c.done for c in chunks)
    # The chunks ran in both pool processes at once: two of them overlap in time (one
    # process runs one task at a time). Celery's trace line gives each task's end and length.
    spans = chunk_spans(worker.log(), job.id)
    assert sorted(spans) == list(range(CHUNKS)), worker.log()[-4000:]
    assert any(
        a[0] < b[1] and b[0] < a[1] for i, a in spans.items() for j, b in spans.items() if i < j
    ), spans

    # Exactly one result: the document and its frames, the partials removed.
    prefix = done.result_prefix or ""
    for name in (RESULT_JSON, FRAMES_CSV, FRAMES_NPZ):
        assert runtime.blobs.exists(prefix + name), name
    assert not any(runtime.blobs.exists(f"{prefix}{CHUNKS_DIR}{i}.npz") for i in range(CHUNKS))
    document = json.loads(runtime.blobs.get_bytes(prefix + RESULT_JSON))
    expected = single.document["summary"]
    summary = document["summary"]
    assert summary["tempo"]["bpm"] == expected["tempo"]["bpm"]
    assert summary["key"]["tonic"] == expected["key"]["tonic"] == "C"
    assert summary["key"]["mode"] == expected["key"]["mode"] == "major"
    assert len(summary["beats_s"]) == len(expected["beats_s"])
    assert document["frames"]["count"] == single.document["frames"]["count"]
    assert summary["loudness"]["integrated_lufs"] == pytest.approx(
        expected["loudness"]["integrated_lufs"], abs=0.1
    )
