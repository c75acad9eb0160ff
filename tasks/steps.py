"""The steps the task bodies share: find the runtime, retry, build the limits, report progress,
store a result, and send what follows a job's end.

The analysis package (librosa, numpy) is imported inside the functions that need it, so that
loading a task module stays cheap; nothing here is imported late to dodge an import circle.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Reject

from core.errors import JobCanceled
from core.followups import enqueue_webhook, render_after_success
from core.jobs import Job
from core.names import (
    FRAMES_CSV,
    FRAMES_NPZ,
    RESULT_JSON,
    SEGMENTS_JSON,
    JobStatus,
    result_prefix,
)
from core.runtime import Runtime, build_runtime
from core.settings import Settings, get_settings
from tasks.outcomes import MEMORY_EXCEEDED, leave_pool

if TYPE_CHECKING:
    from analysis.limits import Limits

log = logging.getLogger(__name__)

# Progress is written at most this often: a row update per librosa stage is cheap, one per
# audio block would make SQLite the bottleneck.
PROGRESS_INTERVAL_S = 0.5


def runtime_of(task: Task) -> Runtime:
    """The runtime attached to the task's app, or one built from the environment."""
    runtime: Runtime | None = getattr(task.app, "earshot_runtime", None)
    if runtime is None:
        runtime = build_runtime(get_settings())
        task.app.earshot_runtime = runtime
    return runtime


def retrier(
    task: Task,
    label: str,
    *,
    max_retries: int | None = None,
    requeue_unpublished: bool = False,
) -> Callable[[Exception], None]:
    """A ``retry(exc)`` that schedules another delivery of ``task`` after a transient error.

    The wait doubles with every retry (2, 4, 8 … s) and is capped at a minute; ``label``
    names the work in the log line. With ``requeue_unpublished``, a retry the broker cannot
    take hands the delivery back instead of dropping it.
    """
    retries = int(task.request.retries or 0)

    def retry(exc: Exception) -> None:
        countdown = min(60, 2 ** (retries + 1))
        log.warning("%s: transient error, retry in %d s: %s", label, countdown, exc)
        try:
            raise task.retry(exc=exc, countdown=countdown, max_retries=max_retries)
        except Reject as rejected:
            if not requeue_unpublished:
                raise
            # Celery rejects the delivery *without* requeue when it cannot publish the retry
            # (the broker is unreachable too, as in a network partition): the message and the
            # job were lost, left "running" for good (tests/integration/test_partition.py).
            # Requeued, the message comes back once the broker is reachable; the attempts
            # limit still bounds the deliveries.
            log.warning("%s: retry not published (%s); message requeued", label, rejected.reason)
            raise Reject(rejected.reason, requeue=True) from exc

    return retry


def limits_of(settings: Settings) -> Limits:
    """The input limits of an analysis, from EARSHOT_MAX_* settings."""
    from analysis.limits import Limits

    return Limits(
        max_duration_s=settings.max_duration_s,
        max_sample_rate=settings.max_sample_rate,
        max_channels=settings.max_channels,
        max_decoded_bytes=settings.max_decoded_bytes,
    )


def progress_writer(runtime: Runtime, job_id: str) -> Callable[[str, float], None]:
    """A ``progress(stage, fraction)`` callback that stops the analysis of a canceled job."""

    def write(stage: str, fraction: float) -> bool:
        return runtime.jobs.update_progress(job_id, stage=stage, percent=100.0 * fraction)

    return _every_interval(write, job_id)


def cancel_checker(runtime: Runtime, job_id: str) -> Callable[[str, float], None]:
    """A progress callback that stops a chunk whose job has ended (canceled, or failed
    by another chunk). It only reads: the job's percent counts chunks, not fractions."""

    def still_running(_stage: str, _fraction: float) -> bool:
        return not runtime.jobs.get(job_id).status.finished

    return _every_interval(still_running, job_id)


def _every_interval(
    step: Callable[[str, float], bool], job_id: str
) -> Callable[[str, float], None]:
    """A progress callback running ``step`` at most every PROGRESS_INTERVAL_S, the first time
    PROGRESS_INTERVAL_S after it was made; when it answers False (the job is no longer running)
    the analysis stops with JobCanceled.

    Not at once: a short file (most uploads) is analysed in less than the interval, and its
    row then sees no write between "starting" and "succeeded" (each one cost ~1 ms of a job's
    ~10 ms outside the analysis, scripts/bench_service.py).
    """
    last = time.monotonic()

    def progress(stage: str, fraction: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_INTERVAL_S:
            return
        last = now
        if not step(stage, fraction):
            raise JobCanceled(f"job {job_id} is no longer running")

    return progress


def store_result(runtime: Runtime, job_id: str, analysis: Any) -> str:
    """Write frames.csv, frames.npz, segments.json, then result.json (last: it marks a whole
    result)."""
    from analysis.export import frames_to_csv, frames_to_npz, segments_to_json

    prefix = result_prefix(job_id)
    runtime.blobs.put_bytes(prefix + FRAMES_CSV, frames_to_csv(analysis))
    runtime.blobs.put_bytes(prefix + FRAMES_NPZ, frames_to_npz(analysis))
    runtime.blobs.put_bytes(prefix + SEGMENTS_JSON, segments_to_json(analysis))
    document = json.dumps(analysis.document, ensure_ascii=False, allow_nan=False).encode()
    runtime.blobs.put_bytes(prefix + RESULT_JSON, document)
    return prefix


def after_end(runtime: Runtime, job: Job | str) -> None:
    """What follows the delivery that ended a job: its plots (if it succeeded) and its
    callback, both on the render queue; a pool process over its memory cap then leaves.

    ``job`` is the job as it ended, or its id (then it is read)."""
    ended = runtime.jobs.get(job) if isinstance(job, str) else job
    if ended.status is JobStatus.SUCCEEDED:
        render_after_success(runtime, ended)
    enqueue_webhook(runtime, ended)
    if ended.error_code == MEMORY_EXCEEDED:
        leave_pool(ended.id)
