"""A long file's job in chunks, tasks applied in-process on real SQLite and a local blob folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import tasks.chunks  # noqa: F401 - registers earshot.analyze and earshot.analyze_chunk
from core.names import (
    ANALYZE_CHUNK_TASK,
    ANALYZE_TASK,
    CHUNK_PLAN_JSON,
    RESULT_JSON,
    SEGMENTS_JSON,
    JobStatus,
    chunk_key,
    result_prefix,
)
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from tests.tasks.conftest import submit

BPM = 120.0
SECONDS = 75.0


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    # 75 s in chunks of 25 s: three chunks.
    settings = Settings(data_dir=tmp_path / "var", chunk_min_duration_s=30, chunk_duration_s=25)
    rt = build_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    sr = 22050
    t = np.arange(int(SECONDS * sr)) / sr
    y = 0.1 * np.sin(2 * np.pi * 440.0 * t)
    step = round(sr * 60.0 / BPM)
    for start in range(0, y.size, step):
        y[start : start + 200] += 0.8 * np.hanning(200)[: y[start : start + 200].size]
    path = tmp_path_factory.mktemp("chunks") / "long.wav"
    sf.write(path, np.clip(y, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    return path.read_bytes()


def run_parent(runtime: Runtime, job_id: str) -> Any:
    return runtime.celery.tasks[ANALYZE_TASK].apply(args=[job_id]).get()


def run_chunk(runtime: Runtime, job_id: str, index: int) -> Any:
    return runtime.celery.tasks[ANALYZE_CHUNK_TASK].apply(args=[job_id, index]).get()


def test_chunked_job_succeeds_with_one_merged_result(runtime: Runtime, long_wav: bytes) -> None:
    job = submit(runtime, long_wav)

    # The parent only plans and publishes: it must not wait for its children.
    assert run_parent(runtime, job.id) == JobStatus.RUNNING
    plan = json.loads(runtime.blobs.get_bytes(result_prefix(job.id) + CHUNK_PLAN_JSON))
    assert plan["count"] == 3
    assert runtime.jobs.pending_chunks(job.id) == [0, 1, 2]

    assert run_chunk(runtime, job.id, 2) == JobStatus.RUNNING
    assert runtime.jobs.get(job.id).percent == pytest.approx(100 / 3, abs=0.1)
    assert run_chunk(runtime, job.id, 0) == JobStatus.RUNNING
    assert run_chunk(runtime, job.id, 1) == JobStatus.SUCCEEDED

    done = runtime.jobs.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.percent == 100.0
    assert done.result_prefix == result_prefix(job.id)
    document = json.loads(runtime.blobs.get_bytes(done.result_prefix + RESULT_JSON))
    assert document["summary"]["tempo"]["bpm"] == pytest.approx(BPM, abs=1.0)
    assert document["audio"]["duration_s"] == pytest.approx(SECONDS, abs=0.01)
    assert document["audio"]["sha256"] == job.sha256
    # The segments (segments.json) follow the clicks across the chunks' seams (25 s, 50 s).
    segments = json.loads(runtime.blobs.get_bytes(done.result_prefix + SEGMENTS_JSON))
    starts = np.array([s["start_s"] for s in segments])
    clicks = np.arange(0.0, SECONDS, 60.0 / BPM)
    near = np.abs(starts[None, :] - clicks[:, None]).min(axis=1)
    assert np.mean(near < 0.05) >= 0.95, near.max()
    assert starts[0] == 0.0
    assert segments[-1]["start_s"] + segments[-1]["duration_s"] >= SECONDS - 0.05
    # The partials are working files: gone once the result is stored.
    assert not runtime.blobs.exists(chunk_key(job.id, 0))


def test_redelivered_chunks_do_not_merge_twice(runtime: Runtime, long_wav: bytes) -> None:
    job = submit(runtime, long_wav)
    run_parent(runtime, job.id)
    run_chunk(runtime, job.id, 0)
    # Chunk 0 delivered again before the others: counted once, so no early merge.
    assert run_chunk(runtime, job.id, 0) == JobStatus.RUNNING
    assert runtime.jobs.finish_chunk(job.id, 0) == (1, 3)
    # A redelivered parent republishes what is missing and keeps what is stored.
    assert run_parent(runtime, job.id) == JobStatus.RUNNING
    assert runtime.jobs.pending_chunks(job.id) == [1, 2]
    run_chunk(runtime, job.id, 1)
    assert run_chunk(runtime, job.id, 2) == JobStatus.SUCCEEDED
    first = runtime.jobs.get(job.id)

    # Every chunk redelivered after the merge: the finished job is left as it is.
    for index in range(3):
        assert run_chunk(runtime, job.id, index) == JobStatus.SUCCEEDED
    again = runtime.jobs.get(job.id)
    assert again.finished_at == first.finished_at
    assert again.updated_at == first.updated_at
    assert runtime.blobs.exists(result_prefix(job.id) + RESULT_JSON)


def test_cancel_stops_the_remaining_chunks(runtime: Runtime, long_wav: bytes) -> None:
    job = submit(runtime, long_wav)
    run_parent(runtime, job.id)
    run_chunk(runtime, job.id, 0)

    runtime.jobs.cancel(job.id)

    assert run_chunk(runtime, job.id, 1) == JobStatus.CANCELED
    assert run_chunk(runtime, job.id, 2) == JobStatus.CANCELED
    assert runtime.jobs.pending_chunks(job.id) == [1, 2]  # never analysed
    assert runtime.jobs.get(job.id).status is JobStatus.CANCELED
    assert not runtime.blobs.exists(result_prefix(job.id) + RESULT_JSON)


def test_invalid_audio_in_a_chunk_fails_the_job(runtime: Runtime, long_wav: bytes) -> None:
    job = submit(runtime, long_wav)
    run_parent(runtime, job.id)
    # What the chunk reads is no longer audio (a decoder error half-way through a long file
    # looks the same to the task): invalid audio is the user's problem, never retried.
    runtime.blobs.put_bytes(job.upload_key or "", b"not audio any more\n" * 100)

    assert run_chunk(runtime, job.id, 1) == JobStatus.FAILED

    failed = runtime.jobs.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "unreadable_audio"
    assert run_chunk(runtime, job.id, 2) == JobStatus.FAILED  # the rest drop out
    assert not runtime.blobs.exists(result_prefix(job.id) + RESULT_JSON)


def test_short_file_stays_single_pass(tmp_path: Path, long_wav: bytes) -> None:
    rt = build_runtime(Settings(data_dir=tmp_path / "single", chunk_min_duration_s=600))
    try:
        job = submit(rt, long_wav)
        assert run_parent(rt, job.id) == JobStatus.SUCCEEDED
        assert rt.jobs.pending_chunks(job.id) == []
    finally:
        rt.close()
