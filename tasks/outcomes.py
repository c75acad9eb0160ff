"""How the work of a delivery ends for its job: the one place a failure becomes a job outcome.

Both analysis tasks (``earshot.analyze`` on a whole file, ``earshot.analyze_chunk`` on a chunk
of a long one) run their steps inside ``job_outcome``, which maps what went wrong to a job
transition: invalid audio fails the job with the audio's code, a time or memory limit with
``time_limit_exceeded`` / ``memory_exceeded``, a missing upload with ``upload_missing``, a
store blink is retried (until the attempts run out: ``store_unavailable``), a cancel stops the
work and removes its files, and anything else is a bug: ``internal_error``, upload kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from core.errors import BlobNotFound, JobCanceled, JobNotFound, TransientStoreError
from core.jobs import Job
from core.names import JobStatus, result_prefix
from core.runtime import Runtime
from core.settings import Settings

log = logging.getLogger(__name__)

# Errors worth another delivery: the database or object store blinked.
TRANSIENT_ERRORS = (TransientStoreError, DatabaseOperationalError, ConnectionError, TimeoutError)

# Error codes the tasks write themselves (InvalidAudio subclasses bring their own).
WORKER_LOST = "worker_lost"
TIME_LIMIT = "time_limit_exceeded"
STORE_UNAVAILABLE = "store_unavailable"
MISSING_UPLOAD = "upload_missing"
INTERNAL_ERROR = "internal_error"
UNKNOWN_PROFILE = "unknown_profile"
MEMORY_EXCEEDED = "memory_exceeded"


class AttemptsExhausted(Exception):
    """Raised when a delivery starts after the worker died on every earlier attempt."""


@dataclass
class Outcome:
    """How the work inside ``job_outcome`` ended, when it did not run to the end.

    ``status`` is None while the work runs through; otherwise the job's status to report and
    ``ended`` whether this delivery made the job's final transition (it then sends the
    follow-ups: plots, webhook).
    """

    status: str | None = None
    ended: bool = False

    def stop(self, status: str, *, ended: bool = False) -> None:
        self.status = status
        self.ended = ended


def discard(
    runtime: Runtime,
    job: Job,
    *,
    when: tuple[JobStatus, ...] = (JobStatus.CANCELED, JobStatus.FAILED),
) -> bool:
    """Remove what a job that ended without a result left behind; True if anything went.

    The job store is read at this moment, and only a job whose status is one of ``when``
    (canceled or failed) loses its files. A delivery may be looking at a stale picture: the
    job was re-queued under it (a restarted ``earshot dev`` re-publishes the job an orphaned
    worker was still analysing, and that worker's progress write then fails as a cancel
    would), or another delivery of the same job succeeded first. Deleting then lost the upload
    the next delivery needed (``upload_missing``) or the winner's result.
    """
    try:
        current = runtime.jobs.get(job.id)
    except JobNotFound:
        return False
    if current.status not in when:
        return False
    runtime.blobs.delete_prefix(result_prefix(job.id))
    if current.upload_key:
        runtime.blobs.delete(current.upload_key)
    return True


def check_attempts(settings: Settings, attempts: int) -> None:
    """Raise ``AttemptsExhausted`` past EARSHOT_TASK_MAX_ATTEMPTS deliveries.

    Each delivery counts an attempt before work starts, so a file that kills the worker
    process every time (OOM, segfault, hard time limit) ends here instead of looping.
    """
    if attempts > settings.task_max_attempts:
        raise AttemptsExhausted(attempts)


def memory_exceeded_message(settings: Any, what: str) -> str:
    """The readable reason of a ``memory_exceeded`` failure, naming the limit and its setting."""
    return (
        f"{what} needed more memory than the limit of {settings.worker_max_memory_mb} MB per "
        "worker process (EARSHOT_WORKER_MAX_MEMORY_MB)"
    )


def leave_pool(job_id: str) -> NoReturn:
    """End this pool process after its task hit the memory cap and failed its job.

    The allocation that failed left nothing behind, but the heap may be fragmented near the
    cap, so the next job starts in a fresh process. SystemExit is how a billiard pool process
    asks to leave: the pool starts a replacement, and the message (acks_late) is handed back
    and dropped by the next delivery, which finds the job finished.
    """
    log.warning("job %s: memory limit reached; this worker process is replaced", job_id)
    raise SystemExit(1)


@contextmanager
def job_outcome(
    runtime: Runtime,
    job: Job,
    *,
    attempts: int,
    retry: Callable[[Exception], None],
    chunk: int | None = None,
) -> Iterator[Outcome]:
    """Run a delivery's work on ``job`` and turn what stops it into the job's outcome.

    ``attempts`` counts this delivery; ``retry(exc)`` schedules another one (it raises).
    ``chunk`` is the index of the chunk the work analyses, None for the whole file: a chunk
    shares its job with siblings, which may end it (fail it, or remove its files) under it.
    Errors raised while recording the outcome (a store write) leave the block to the caller.
    """
    from analysis.errors import InvalidAudio, UnknownProfile

    settings = runtime.settings
    job_id = job.id
    name = "analysis" if chunk is None else f"chunk {chunk}"
    outcome = Outcome()

    def fail(code: str, message: str, *, remove_files: bool) -> None:
        ended = runtime.jobs.mark_failed(job_id, code=code, message=message)
        if remove_files:
            discard(runtime, job)
        outcome.stop(JobStatus.FAILED.value, ended=ended)

    try:
        yield outcome
    except AttemptsExhausted:
        what = "this file" if chunk is None else f"chunk {chunk} of this file"
        fail(
            WORKER_LOST,
            f"the worker died {attempts - 1} times analysing {what} "
            f"(EARSHOT_TASK_MAX_ATTEMPTS={settings.task_max_attempts})",
            remove_files=True,
        )
    except JobCanceled:
        current = runtime.jobs.get(job_id)
        if chunk is None:
            # Canceled, or re-queued under this delivery (then the next delivery needs the
            # upload; discard keeps it).
            log.info("job %s is %s: this delivery stops its analysis", job_id, current.status.value)
            discard(runtime, job)
        else:
            # Canceled, or ended by a sibling chunk (which decided about the files itself).
            log.info("job %s ended while chunk %d ran", job_id, chunk)
            discard(runtime, current, when=(JobStatus.CANCELED,))
        outcome.stop(current.status.value)
    except InvalidAudio as exc:
        log.info("job %s failed: %s: %s", job_id, exc.code, exc)
        fail(exc.code, str(exc), remove_files=True)
    except UnknownProfile as exc:
        fail(UNKNOWN_PROFILE, str(exc), remove_files=True)
    except BlobNotFound as exc:
        now = runtime.jobs.get(job_id).status if chunk is not None else None
        if now is not None and now.finished:
            outcome.stop(now.value)  # a sibling ended the job and removed the files
        else:
            fail(MISSING_UPLOAD, str(exc), remove_files=False)
    except SoftTimeLimitExceeded:
        fail(
            TIME_LIMIT,
            f"{name} took longer than {settings.task_soft_time_limit_s} s "
            "(EARSHOT_TASK_SOFT_TIME_LIMIT_S)",
            remove_files=True,
        )
    except TRANSIENT_ERRORS as exc:
        if attempts < settings.task_max_attempts:
            retry(exc)
            raise
        fail(
            STORE_UNAVAILABLE,
            f"storage unavailable after {attempts} attempts: {exc}",
            remove_files=False,
        )
    except MemoryError:
        # The pool process's memory cap (core.processes.limit_memory) refused an allocation.
        # Celery's worker process re-raises an uncaught MemoryError and would take the worker
        # down with it; the job fails for good instead (the same file needs the same memory).
        log.warning("job %s: %s exceeded the memory limit", job_id, name)
        subject = "the analysis" if chunk is None else name
        fail(MEMORY_EXCEEDED, memory_exceeded_message(settings, subject), remove_files=True)
    except Exception as exc:
        # A bug, not the user's fault and not worth a retry: fail loudly, keep the upload so
        # the job can be re-run once fixed.
        log.exception("job %s: %s crashed", job_id, name)
        fail(INTERNAL_ERROR, f"{type(exc).__name__}", remove_files=False)
