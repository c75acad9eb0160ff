"""``job_outcome``: every way the work of a delivery can stop, for a whole file and a chunk,
checked against the job row and the blob folder of a real runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from analysis.errors import DurationExceeded, UnknownProfile
from core.errors import BlobNotFound, JobCanceled, TransientStoreError
from core.jobs import Job
from core.names import JobStatus, result_prefix
from core.runtime import Runtime
from tasks.outcomes import check_attempts, job_outcome
from tests.tasks.conftest import submit


class Retried(Exception):
    """What the test's ``retry`` raises, as Celery's ``Task.retry`` raises ``Retry``."""


def no_retry(exc: Exception) -> None:
    raise Retried(exc)


def upload_on_disk(runtime: Runtime, job: Job) -> bool:
    """Whether the upload's file is still in the local blob folder (read with the filesystem)."""
    name = Path(job.upload_key or "").name
    return any(p.name == name for p in Path(runtime.settings.data_dir).rglob("*") if p.is_file())


def running_job(runtime: Runtime) -> Job:
    job = submit(runtime, b"RIFF not really audio")
    assert runtime.jobs.mark_running(job.id)
    runtime.blobs.put_bytes(result_prefix(job.id) + "partial.bin", b"x")
    return runtime.jobs.get(job.id)


# (raised in the block, error code, words of the message, upload kept)
FAILURES = [
    (DurationExceeded("duration 7214.0 s exceeds the limit"), "duration_exceeded", "7214", False),
    (UnknownProfile("no profile 'loud'"), "unknown_profile", "loud", False),
    (SoftTimeLimitExceeded(), "time_limit_exceeded", "EARSHOT_TASK_SOFT_TIME_LIMIT_S", False),
    (MemoryError(), "memory_exceeded", "EARSHOT_WORKER_MAX_MEMORY_MB", False),
    (BlobNotFound("uploads/x"), "upload_missing", "uploads/x", True),
    (RuntimeError("a bug"), "internal_error", "RuntimeError", True),
]


@pytest.mark.parametrize("chunk", [None, 2], ids=["whole", "chunk"])
@pytest.mark.parametrize(("error", "code", "words", "kept"), FAILURES, ids=[f[1] for f in FAILURES])
def test_a_failure_becomes_the_jobs_outcome(
    runtime: Runtime, chunk: int | None, error: BaseException, code: str, words: str, kept: bool
) -> None:
    job = running_job(runtime)

    with job_outcome(runtime, job, attempts=1, retry=no_retry, chunk=chunk) as outcome:
        raise error

    assert outcome.status == JobStatus.FAILED.value
    assert outcome.ended  # this delivery failed the job: it sends the follow-ups
    failed = runtime.jobs.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == code
    assert words in (failed.error_message or "")
    # The limits' messages name the work that hit them.
    subject = {
        ("time_limit_exceeded", None): "analysis took longer than 1500 s",
        ("time_limit_exceeded", 2): "chunk 2 took longer than 1500 s",
        ("memory_exceeded", None): "the analysis needed more memory than the limit",
        ("memory_exceeded", 2): "chunk 2 needed more memory than the limit",
    }.get((code, chunk), "")
    assert (failed.error_message or "").startswith(subject)
    # A user's error or a limit removes the files; a bug or a lost upload keeps what is left.
    assert upload_on_disk(runtime, job) is kept
    assert runtime.blobs.exists(result_prefix(job.id) + "partial.bin") is kept


def test_a_second_failure_does_not_end_the_job_again(runtime: Runtime) -> None:
    job = running_job(runtime)
    with job_outcome(runtime, job, attempts=1, retry=no_retry) as first:
        raise RuntimeError("first")
    with job_outcome(runtime, job, attempts=1, retry=no_retry, chunk=1) as second:
        raise MemoryError

    assert first.ended and not second.ended
    assert runtime.jobs.get(job.id).error_code == "internal_error"


def test_work_that_runs_through_leaves_the_job_alone(runtime: Runtime) -> None:
    job = running_job(runtime)
    with job_outcome(runtime, job, attempts=1, retry=no_retry) as outcome:
        pass
    assert outcome.status is None and not outcome.ended
    assert runtime.jobs.get(job.id).status is JobStatus.RUNNING


@pytest.mark.parametrize("chunk", [None, 0], ids=["whole", "chunk"])
def test_a_store_blink_is_retried_until_the_attempts_run_out(
    runtime: Runtime, chunk: int | None
) -> None:
    job = running_job(runtime)
    limit = runtime.settings.task_max_attempts

    with (
        pytest.raises(Retried),
        job_outcome(runtime, job, attempts=limit - 1, retry=no_retry, chunk=chunk),
    ):
        raise TransientStoreError("database is locked")
    assert runtime.jobs.get(job.id).status is JobStatus.RUNNING

    with job_outcome(runtime, job, attempts=limit, retry=no_retry, chunk=chunk) as outcome:
        raise TransientStoreError("database is locked")
    failed = runtime.jobs.get(job.id)
    assert (outcome.status, failed.error_code) == ("failed", "store_unavailable")
    assert f"after {limit} attempts: database is locked" in (failed.error_message or "")
    assert upload_on_disk(runtime, job)


@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "chunk"])
def test_a_delivery_past_the_attempts_limit_fails_worker_lost(
    runtime: Runtime, chunk: int | None
) -> None:
    job = running_job(runtime)
    limit = runtime.settings.task_max_attempts
    reached = []

    with job_outcome(runtime, job, attempts=limit + 1, retry=no_retry, chunk=chunk) as outcome:
        check_attempts(runtime.settings, limit + 1)
        reached.append("work")

    assert reached == []  # the work never started
    failed = runtime.jobs.get(job.id)
    assert (outcome.status, failed.error_code) == ("failed", "worker_lost")
    assert f"died {limit} times" in (failed.error_message or "")
    assert ("chunk 1 of this file" in (failed.error_message or "")) is (chunk is not None)
    assert not upload_on_disk(runtime, job)


@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "chunk"])
def test_a_cancel_stops_the_work_and_removes_the_files(runtime: Runtime, chunk: int | None) -> None:
    job = running_job(runtime)
    runtime.jobs.cancel(job.id)

    with job_outcome(runtime, job, attempts=1, retry=no_retry, chunk=chunk) as outcome:
        raise JobCanceled("gone")

    assert (outcome.status, outcome.ended) == ("canceled", False)
    assert runtime.jobs.get(job.id).status is JobStatus.CANCELED
    assert not upload_on_disk(runtime, job)


def test_a_chunk_whose_sibling_failed_the_job_keeps_what_the_sibling_kept(
    runtime: Runtime,
) -> None:
    job = running_job(runtime)
    # A sibling chunk hit a bug: the job failed internal_error with its upload kept for a re-run.
    with job_outcome(runtime, job, attempts=1, retry=no_retry, chunk=0):
        raise RuntimeError("a bug")

    with job_outcome(runtime, job, attempts=1, retry=no_retry, chunk=1) as canceled:
        raise JobCanceled("ended")
    with job_outcome(runtime, job, attempts=1, retry=no_retry, chunk=2) as missing:
        raise BlobNotFound("plan.json")

    assert (canceled.status, canceled.ended) == ("failed", False)
    assert (missing.status, missing.ended) == ("failed", False)
    assert runtime.jobs.get(job.id).error_code == "internal_error"
    assert upload_on_disk(runtime, job)
