"""The ``earshot.analyze`` task: load job, fetch audio, analyze, store result, mark done.

The message carries the job id only; the job row is the truth. Every step is safe to repeat:
a redelivered message for a finished job is acknowledged and dropped, result files are
overwritten whole, and result.json is written last so a half-stored result is never served.
What stops the work on the way becomes the job's outcome in one place, ``tasks.outcomes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Task, shared_task

from core import metrics
from core.errors import JobNotFound
from core.jobs import Job
from core.names import ANALYZE_TASK, JobStatus, upload_key
from core.runtime import Runtime
from tasks.chunks import plan_for, start_chunks
from tasks.outcomes import TRANSIENT_ERRORS, check_attempts, discard, job_outcome
from tasks.steps import (
    PROGRESS_INTERVAL_S,
    after_end,
    limits_of,
    progress_writer,
    retrier,
    runtime_of,
    store_result,
)

log = logging.getLogger(__name__)


def run_analysis(runtime: Runtime, job_id: str, *, retry: Callable[[Exception], None]) -> str:
    """The task body; returns the job's final (or current) status for logs and tests.

    ``retry(exc)`` schedules another delivery for a transient error (Celery's ``Task.retry``).
    """
    return _deliver(runtime, job_id, retry=retry)[0]


def _deliver(
    runtime: Runtime, job_id: str, *, retry: Callable[[Exception], None]
) -> tuple[str, Job | str | None]:
    """``run_analysis``, and what ``after_end`` needs when this delivery ended the job: the
    job as it ended (or its id), else None.

    Two statements on the job row for a short file: the claim and the success, each an UPDATE
    that returns the row (reading it apart cost a statement each, ~1 ms on SQLite).
    """
    # The analysis stack (librosa, numpy) loads when a task runs, not with the task module.
    from analysis import ANALYZER_VERSION, analyze_file
    from analysis.decode import open_audio

    try:
        job = runtime.jobs.claim(job_id)
        if job is None:
            # Finished already (a redelivery): nothing to do, nothing to send again.
            return runtime.jobs.get(job_id).status.value, None
    except JobNotFound:
        log.warning("job %s does not exist; message dropped", job_id)
        return "missing", None
    except TRANSIENT_ERRORS as exc:
        retry(exc)
        raise

    with job_outcome(runtime, job, attempts=job.attempts, retry=retry) as outcome:
        check_attempts(runtime.settings, job.attempts)
        limits = limits_of(runtime.settings)
        with (
            runtime.blobs.local_path(job.upload_key or upload_key(job_id)) as path,
            # Opened once: its header plans the job, its decoder then runs the analysis.
            open_audio(path, limits=limits) as source,
        ):
            plan = plan_for(runtime, job, source.info)
            if plan is not None:
                # A long file: its chunks run on several workers; this delivery is done.
                return start_chunks(runtime, job, plan), None
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
                source=source,
            )
        metrics.observe_analysis(
            seconds=time.monotonic() - started,
            audio_seconds=analysis.document["audio"]["duration_s"],
        )
        if time.monotonic() - started >= PROGRESS_INTERVAL_S:
            # Worth a row write only where progress is being shown: a long file, whose frames
            # take a while to store.
            runtime.jobs.update_progress(job_id, stage="storing", percent=99.0)
        prefix = store_result(runtime, job_id, analysis)
    if outcome.status is not None:
        return outcome.status, (job_id if outcome.ended else None)

    ended = runtime.jobs.succeed(job_id, result_prefix=prefix, analyzer_version=ANALYZER_VERSION)
    if ended is None:
        # Canceled while the result was being stored: the cancel wins, the files go (unless
        # another delivery of the job succeeded first: its result is the same and stays).
        discard(runtime, job)
        return runtime.jobs.get(job_id).status.value, None
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
    return JobStatus.SUCCEEDED.value, ended


@shared_task(name=ANALYZE_TASK, bind=True, ignore_result=True, acks_late=True)
def analyze(self: Task, job_id: str) -> str:
    """Analyze the uploaded audio of job ``job_id`` and store its result."""
    runtime = runtime_of(self)
    retry = retrier(self, f"job {job_id}", requeue_unpublished=True)
    try:
        status, ended = _deliver(runtime, job_id, retry=retry)
        if ended is not None:
            # This delivery ended the job (a redelivery of a finished job sends nothing again).
            after_end(runtime, ended)
        return status
    except TRANSIENT_ERRORS as exc:
        # A database blip on a write run_analysis does not guard itself (marking the job
        # succeeded or failed): without this the message is acked and the job stays "running".
        # Every step is safe to repeat, so deliver again.
        retry(exc)
        raise
