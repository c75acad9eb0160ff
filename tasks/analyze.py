"""The ``earshot.analyze`` task: load job, fetch audio, analyze, store result, mark done.

The message carries the job id only; the job row is the truth. Every step is safe to repeat:
a redelivered message for a finished job is acknowledged and dropped, result files are
overwritten whole, and result.json is written last so a half-stored result is never served.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from core import metrics
from core.errors import BlobNotFound, JobCanceled, JobNotFound, TransientStoreError
from core.jobs import Job
from core.names import (
    ANALYZE_TASK,
    FRAMES_CSV,
    FRAMES_NPZ,
    RESULT_JSON,
    JobStatus,
    result_prefix,
    upload_key,
)
from core.runtime import Runtime, build_runtime
from core.settings import get_settings

log = logging.getLogger(__name__)

# Progress is written at most this often: a row update per librosa stage is cheap, one per
# audio block would make SQLite the bottleneck.
PROGRESS_INTERVAL_S = 0.5

# Errors worth another delivery: the database or object store blinked.
TRANSIENT_ERRORS = (TransientStoreError, DatabaseOperationalError, ConnectionError, TimeoutError)

# Error codes the task writes itself (InvalidAudio subclasses bring their own).
WORKER_LOST = "worker_lost"
TIME_LIMIT = "time_limit_exceeded"
STORE_UNAVAILABLE = "store_unavailable"
MISSING_UPLOAD = "upload_missing"
INTERNAL_ERROR = "internal_error"
UNKNOWN_PROFILE = "unknown_profile"
MEMORY_EXCEEDED = "memory_exceeded"


def runtime_of(task: Task) -> Runtime:
    """The runtime attached to the task's app, or one built from the environment."""
    runtime: Runtime | None = getattr(task.app, "earshot_runtime", None)
    if runtime is None:
        runtime = build_runtime(get_settings())
        task.app.earshot_runtime = runtime
    return runtime


def progress_writer(runtime: Runtime, job_id: str) -> Callable[[str, float], None]:
    """A ``progress(stage, fraction)`` callback that stops the analysis of a canceled job."""
    last = 0.0

    def progress(stage: str, fraction: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_INTERVAL_S:
            return
        last = now
        if not runtime.jobs.update_progress(job_id, stage=stage, percent=100.0 * fraction):
            raise JobCanceled(f"job {job_id} is no longer running")

    return progress


def store_result(runtime: Runtime, job_id: str, analysis: Any) -> str:
    """Write frames.csv, frames.npz, then result.json (last: it marks a whole result)."""
    from analysis.export import frames_to_csv, frames_to_npz

    prefix = result_prefix(job_id)
    runtime.blobs.put_bytes(prefix + FRAMES_CSV, frames_to_csv(analysis))
    runtime.blobs.put_bytes(prefix + FRAMES_NPZ, frames_to_npz(analysis))
    document = json.dumps(analysis.document, ensure_ascii=False, allow_nan=False).encode()
    runtime.blobs.put_bytes(prefix + RESULT_JSON, document)
    return prefix


def discard(runtime: Runtime, job: Job) -> bool:
    """Remove what a job that ended without a result left behind; True if anything went.

    The job store is read at this moment, and only a job that is canceled or failed loses its
    files. A delivery may be looking at a stale picture: the job was re-queued under it (a
    restarted ``earshot dev`` re-publishes the job an orphaned worker was still analysing, and
    that worker's progress write then fails as a cancel would), or another delivery of the same
    job succeeded first. Deleting then lost the upload the next delivery needed
    (``upload_missing``) or the winner's result.
    """
    try:
        current = runtime.jobs.get(job.id)
    except JobNotFound:
        return False
    if current.status not in (JobStatus.CANCELED, JobStatus.FAILED):
        return False
    runtime.blobs.delete_prefix(result_prefix(job.id))
    if current.upload_key:
        runtime.blobs.delete(current.upload_key)
    return True


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


def run_analysis(runtime: Runtime, job_id: str, *, retry: Callable[[Exception], None]) -> str:
    """The task body; returns the job's final (or current) status for logs and tests.

    ``retry(exc)`` schedules another delivery for a transient error (Celery's ``Task.retry``).
    """
    from analysis import ANALYZER_VERSION, Limits, analyze_file
    from analysis.errors import InvalidAudio, UnknownProfile

    settings = runtime.settings
    try:
        if not runtime.jobs.mark_running(job_id):
            return runtime.jobs.get(job_id).status.value
        job = runtime.jobs.get(job_id)
    except JobNotFound:
        log.warning("job %s does not exist; message dropped", job_id)
        return "missing"
    except TRANSIENT_ERRORS as exc:
        retry(exc)
        raise
    if job.attempts > settings.task_max_attempts:
        # Each delivery counts an attempt before work starts, so a file that kills the worker
        # process every time (OOM, segfault, hard time limit) ends here instead of looping.
        runtime.jobs.mark_failed(
            job_id,
            code=WORKER_LOST,
            message=f"the worker died {job.attempts - 1} times analysing this file "
            f"(EARSHOT_TASK_MAX_ATTEMPTS={settings.task_max_attempts})",
        )
        discard(runtime, job)
        return JobStatus.FAILED.value

    limits = Limits(
        max_duration_s=settings.max_duration_s,
        max_sample_rate=settings.max_sample_rate,
        max_channels=settings.max_channels,
        max_decoded_bytes=settings.max_decoded_bytes,
    )
    try:
        with runtime.blobs.local_path(job.upload_key or upload_key(job_id)) as path:
            from tasks.chunks import plan_for, start_chunks

            plan = plan_for(runtime, job, path, limits)
            if plan is not None:
                # A long file: its chunks run on several workers; this delivery is done.
                return start_chunks(runtime, job, plan)
            log.info(
                "job %s: analysing %s (%d bytes, profile %s, attempt %d)",
                job_id,
                job.filename,
                job.size_bytes,
                job.profile,
                job.attempts,
            )
            started = time.monotonic()
            analysis = analyze_file(
                path,
                profile=job.profile,
                limits=limits,
                progress=progress_writer(runtime, job_id),
            )
        metrics.observe_analysis(
            seconds=time.monotonic() - started,
            audio_seconds=analysis.document["audio"]["duration_s"],
        )
        runtime.jobs.update_progress(job_id, stage="storing", percent=99.0)
        prefix = store_result(runtime, job_id, analysis)
    except JobCanceled:
        # Canceled, or re-queued under this delivery (then the next delivery needs the upload;
        # discard keeps it).
        status = runtime.jobs.get(job_id).status.value
        log.info("job %s is %s: this delivery stops its analysis", job_id, status)
        discard(runtime, job)
        return status
    except InvalidAudio as exc:
        log.info("job %s failed: %s: %s", job_id, exc.code, exc)
        runtime.jobs.mark_failed(job_id, code=exc.code, message=str(exc))
        discard(runtime, job)
        return JobStatus.FAILED.value
    except UnknownProfile as exc:
        runtime.jobs.mark_failed(job_id, code=UNKNOWN_PROFILE, message=str(exc))
        discard(runtime, job)
        return JobStatus.FAILED.value
    except BlobNotFound as exc:
        runtime.jobs.mark_failed(job_id, code=MISSING_UPLOAD, message=str(exc))
        return JobStatus.FAILED.value
    except SoftTimeLimitExceeded:
        runtime.jobs.mark_failed(
            job_id,
            code=TIME_LIMIT,
            message=f"analysis took longer than {settings.task_soft_time_limit_s} s "
            "(EARSHOT_TASK_SOFT_TIME_LIMIT_S)",
        )
        discard(runtime, job)
        return JobStatus.FAILED.value
    except TRANSIENT_ERRORS as exc:
        if job.attempts >= settings.task_max_attempts:
            runtime.jobs.mark_failed(
                job_id,
                code=STORE_UNAVAILABLE,
                message=f"storage unavailable after {job.attempts} attempts: {exc}",
            )
            return JobStatus.FAILED.value
        retry(exc)
        raise
    except MemoryError:
        # The pool process's memory cap (core.processes.limit_memory) refused an allocation.
        # Celery's worker process re-raises an uncaught MemoryError and would take the worker
        # down with it; the job fails for good instead (the same file needs the same memory).
        log.warning("job %s: analysis exceeded the memory limit", job_id)
        runtime.jobs.mark_failed(
            job_id, code=MEMORY_EXCEEDED, message=memory_exceeded_message(settings, "the analysis")
        )
        discard(runtime, job)
        return JobStatus.FAILED.value
    except Exception as exc:
        # A bug, not the user's fault and not worth a retry: fail loudly, keep the upload so
        # the job can be re-run once fixed.
        log.exception("job %s: analysis crashed", job_id)
        runtime.jobs.mark_failed(job_id, code=INTERNAL_ERROR, message=f"{type(exc).__name__}")
        return JobStatus.FAILED.value

    if not runtime.jobs.mark_succeeded(
        job_id, result_prefix=prefix, analyzer_version=ANALYZER_VERSION
    ):
        # Canceled while the result was being stored: the cancel wins, the files go (unless
        # another delivery of the job succeeded first: its result is the same and stays).
        discard(runtime, job)
        return runtime.jobs.get(job_id).status.value
    summary = analysis.document["summary"]
    log.info(
        "job %s succeeded: %.1f s of audio in %.2f s, %.1f BPM, %s %s",
        job_id,
        analysis.document["audio"]["duration_s"],
        time.monotonic() - started,
        summary["tempo"]["bpm"],
        summary["key"]["tonic"],
        summary["key"]["mode"],
    )
    return JobStatus.SUCCEEDED.value


def is_active(runtime: Runtime, job_id: str) -> bool:
    """Whether the job is queued or running (False for a missing one)."""
    try:
        return not runtime.jobs.get(job_id).status.finished
    except JobNotFound:
        return False


@shared_task(name=ANALYZE_TASK, bind=True, ignore_result=True, acks_late=True)
def analyze(self: Task, job_id: str) -> str:
    """Analyze the uploaded audio of job ``job_id`` and store its result."""
    runtime = runtime_of(self)

    def retry(exc: Exception) -> None:
        # Exponential backoff, 2, 4, 8 … s, capped at a minute.
        countdown = min(60, 2 ** max(1, self.request.retries + 1))
        log.warning("job %s: transient error, retry in %d s: %s", job_id, countdown, exc)
        try:
            raise self.retry(exc=exc, countdown=countdown, max_retries=None)
        except Reject as rejected:
            # Celery rejects the delivery *without* requeue when it cannot publish the retry
            # (the broker is unreachable too, as in a network partition): the message and the
            # job were lost, left "running" for good (tests/integration/test_partition.py).
            # Requeued, the message comes back once the broker is reachable; the attempts
            # limit still bounds the deliveries.
            log.warning(
                "job %s: retry not published (%s); message requeued", job_id, rejected.reason
            )
            raise Reject(rejected.reason, requeue=True) from exc

    try:
        claimable = is_active(runtime, job_id)
        status = run_analysis(runtime, job_id, retry=retry)
        if claimable and status in (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value):
            # This delivery ended the job: draw its plots and tell its callback URL (both on
            # the render queue; a redelivery of a finished job does neither again).
            from core.followups import enqueue_webhook, render_after_success

            ended = runtime.jobs.get(job_id)
            if ended.status is JobStatus.SUCCEEDED:
                render_after_success(runtime, ended)
            enqueue_webhook(runtime, ended)
            if ended.error_code == MEMORY_EXCEEDED:
                leave_pool(job_id)
        return status
    except TRANSIENT_ERRORS as exc:
        # A database blip on a write run_analysis does not guard itself (marking the job
        # succeeded or failed): without this the message is acked and the job stays "running".
        # Every step is safe to repeat, so deliver again.
        retry(exc)
        raise
