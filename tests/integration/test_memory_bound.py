"""A hard memory bound per worker process: a task that needs more than
EARSHOT_WORKER_MAX_MEMORY_MB fails its job ``memory_exceeded``, the worker stays up, its pool
process is replaced, and the next job succeeds.

A real `earshot worker` on the embedded broker. Memory figures come from /proc, not from the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from analysis.decode import BLOCK_FRAMES
from core.names import RESULT_JSON, JobStatus, Queue
from core.runtime import build_runtime
from core.settings import Settings
from tests.integration.conftest import (
    SAMPLES,
    Service,
    service_env,
    submit_file,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.integration

# Channels of the file that needs more memory: the decoder reads BLOCK_FRAMES frames of every
# channel at once as float32, 128 MB for 512 channels, whatever the duration.
WIDE_CHANNELS = 512

# Memory the limit leaves above what a pool process holds after analysing a short clip: far
# below the wide file's one block, far above what the short clip needs (measured: under 32 MB).
HEADROOM_MB = 64


def pool_processes(worker_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == worker_pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def private_memory_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmData for pid {pid}")


def start_worker(tmp_path: Path, numba_cache: Path, name: str, **settings: str) -> Service:
    service = Service(
        ["worker", f"--queues={Queue.INTERACTIVE.value}", "--concurrency=1"],
        env=service_env(tmp_path / "var", numba_cache, max_channels=str(WIDE_CHANNELS), **settings),
        log=tmp_path / f"{name}.log",
    )

    def ready() -> bool:
        service.assert_alive()
        return " ready." in service.log() and len(pool_processes(service.process.pid)) == 1

    wait_for(ready, what=f"worker {name} to be ready")
    return service


def wide_wav(path: Path) -> Path:
    rng = np.random.default_rng(3)
    y = rng.integers(-2000, 2000, size=(BLOCK_FRAMES, WIDE_CHANNELS), dtype=np.int16)
    sf.write(path, y, 8000, subtype="PCM_16")
    return path


def test_a_task_over_the_memory_limit_fails_its_job_and_the_worker_carries_on(
    tmp_path: Path, numba_cache: Path
) -> None:
    runtime = build_runtime(Settings(data_dir=tmp_path / "var"))
    short = SAMPLES / "click120_cmajor.wav"
    try:
        # What a pool process holds once it has analysed a short clip, under the default limit.
        probe = start_worker(tmp_path, numba_cache, "probe")
        try:
            job = submit_file(runtime, short)
            done = wait_finished(runtime, job.id, services=(probe,))
            assert done.status is JobStatus.SUCCEEDED, (done.error_code, done.error_message)
            (pool,) = pool_processes(probe.process.pid)
            held_mb = private_memory_mb(pool)
        finally:
            probe.stop()

        limit_mb = held_mb + HEADROOM_MB
        worker = start_worker(tmp_path, numba_cache, "bounded", worker_max_memory_mb=str(limit_mb))
        try:
            (first_pool,) = pool_processes(worker.process.pid)
            wide = submit_file(runtime, wide_wav(tmp_path / "wide.wav"))

            failed = wait_finished(runtime, wide.id, services=(worker,))

            assert failed.status is JobStatus.FAILED
            assert failed.error_code == "memory_exceeded", failed.error_message
            assert f"{limit_mb} MB" in (failed.error_message or "")
            assert "EARSHOT_WORKER_MAX_MEMORY_MB" in (failed.error_message or "")
            assert failed.attempts == 1
            assert not (tmp_path / "var" / "blobs" / (wide.upload_key or "")).exists()
            # The worker is the same process, and its pool process was replaced.
            worker.assert_alive()
            assert Path(f"/proc/{worker.process.pid}").exists()
            replaced = wait_for(
                lambda: [p for p in pool_processes(worker.process.pid) if p != first_pool],
                what="a fresh pool process",
            )
            assert first_pool not in pool_processes(worker.process.pid)
            assert private_memory_mb(replaced[0]) < limit_mb

            after = submit_file(runtime, short)
            done = wait_finished(runtime, after.id, services=(worker,))
            assert done.status is JobStatus.SUCCEEDED, (done.error_code, done.error_message)
            document = json.loads(runtime.blobs.get_bytes((done.result_prefix or "") + RESULT_JSON))
            assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3)
            # The redelivered message of the failed job was dropped, not run again.
            assert runtime.jobs.get(wide.id).attempts == 1
            log = worker.log()
            assert "Process got" not in log, log[-4000:]
        finally:
            worker.stop()
    finally:
        runtime.close()
