"""The ``earshot.render`` task: draw a succeeded job's plots and store them beside its result.

Load job → fetch audio → decode once → waveform peaks and spectrogram → store. It runs on its
own queue after the analysis, so plots never delay a result, and a plot that cannot be drawn
never takes the result away: the failure is stored as ``render_error.json`` and the plot
endpoints say so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from celery import Task, shared_task

from tasks.analyze import TRANSIENT_ERRORS, runtime_of
from tasks.errors import BlobNotFound, JobNotFound
from tasks.jobs import Job
from tasks.names import (
    RENDER_ERROR_JSON,
    RENDER_TASK,
    RESULT_JSON,
    SPECTROGRAM_PNG,
    WAVEFORM_JSON,
    JobStatus,
    Priority,
    Queue,
    upload_key,
)
from tasks.runtime import Runtime

log = logging.getLogger(__name__)

# Retries of a transient store error before the render is given up.
MAX_RETRIES = 3

UPLOAD_MISSING = "upload_missing"
UNREADABLE_AUDIO = "unreadable_audio"
RENDER_FAILED = "render_failed"
NOT_QUEUED = "render_not_queued"


def store_error(runtime: Runtime, prefix: str, code: str, message: str) -> None:
    """Record why the plots of a result will not come (read by the plot endpoints)."""
    document = {"code": code, "message": message[:500]}
    runtime.blobs.put_bytes(prefix + RENDER_ERROR_JSON, json.dumps(document).encode())


def run_render(
    runtime: Runtime, job_id: str, *, retry: Callable[[Exception], None], last_try: bool
) -> str:
    """The task body; returns what happened (``rendered``, ``skipped``, ``failed``).

    ``retry(exc)`` schedules another delivery for a transient error; on the ``last_try`` the
    error is stored instead.
    """
    from analysis import Limits
    from analysis.errors import InvalidAudio
    from analysis.plots import PLOT_SR, load_mono, spectrogram_png, waveform_peaks

    try:
        job = runtime.jobs.get(job_id)
    except JobNotFound:
        log.warning("render of job %s dropped: no such job", job_id)
        return "skipped"
    if job.status is not JobStatus.SUCCEEDED or not job.result_prefix:
        return "skipped"
    prefix = job.result_prefix
    settings = runtime.settings
    limits = Limits(
        max_duration_s=settings.max_duration_s,
        max_sample_rate=settings.max_sample_rate,
        max_channels=settings.max_channels,
    )
    try:
        document = json.loads(runtime.blobs.get_bytes(prefix + RESULT_JSON))
        beats_s = [float(b) for b in document.get("summary", {}).get("beats_s", [])]
        with runtime.blobs.local_path(job.upload_key or upload_key(job_id)) as path:
            y = load_mono(path, sr=PLOT_SR, limits=limits)
        peaks = waveform_peaks(y, PLOT_SR)
        png = spectrogram_png(y, PLOT_SR, beats_s=beats_s)
        del y
        runtime.blobs.put_bytes(prefix + SPECTROGRAM_PNG, png)
        runtime.blobs.put_bytes(prefix + WAVEFORM_JSON, json.dumps(peaks).encode())
        runtime.blobs.delete(prefix + RENDER_ERROR_JSON)
    except BlobNotFound as exc:
        store_error(runtime, prefix, UPLOAD_MISSING, f"the audio to draw is gone: {exc}")
        return "failed"
    except InvalidAudio as exc:
        store_error(runtime, prefix, UNREADABLE_AUDIO, str(exc))
        return "failed"
    except TRANSIENT_ERRORS as exc:
        if last_try:
            log.warning("render of job %s given up: %s", job_id, exc)
            store_error(runtime, prefix, RENDER_FAILED, f"storage unavailable: {exc}")
            return "failed"
        retry(exc)
        raise
    except Exception as exc:
        log.exception("job %s: rendering crashed", job_id)
        store_error(runtime, prefix, RENDER_FAILED, f"drawing the plots failed: {exc}")
        return "failed"
    return "rendered"


def enqueue_render(runtime: Runtime, job: Job) -> None:
    """Queue the plots of a succeeded job. Never raises: the result stands without plots."""
    try:
        runtime.celery.send_task(RENDER_TASK, args=[job.id], queue=Queue.RENDER.value, retry=False)
    except Exception as exc:  # kombu raises many types for "broker unreachable"
        log.warning("render of job %s not queued: %s", job.id, exc)
        if job.result_prefix:
            store_error(runtime, job.result_prefix, NOT_QUEUED, "the render queue was unreachable")


# Set in a job's ``extra`` once its plots were asked for, so repeated polls queue one render.
RENDER_REQUESTED = "render_requested_at"


def render_after_success(runtime: Runtime, job: Job) -> None:
    """Queue the plots of a job that just succeeded, if its priority draws them eagerly.

    Interactive jobs are drawn at once: a person is waiting and will look. Batch jobs are drawn
    when a plot is first asked for (``request_render``): drawing costs several times the
    analysis of a short clip, and most batch results are never looked at.
    """
    if job.priority == Priority.INTERACTIVE.value:
        enqueue_render(runtime, job)


def request_render(runtime: Runtime, job: Job) -> bool:
    """Queue the plots of a succeeded job that has none yet; False if already queued once.

    A second request while the first render is on its way queues nothing; should two
    requests race, the render is simply drawn twice (it is idempotent).
    """
    if job.priority == Priority.INTERACTIVE.value or RENDER_REQUESTED in job.extra:
        return False
    from tasks.jobs import utcnow

    runtime.jobs.set_extra(job.id, {**job.extra, RENDER_REQUESTED: utcnow().isoformat()})
    enqueue_render(runtime, job)
    return True


@shared_task(name=RENDER_TASK, bind=True, ignore_result=True, acks_late=True)
def render(self: Task, job_id: str) -> str:
    """Draw and store the waveform peaks and spectrogram of job ``job_id``."""
    runtime = runtime_of(self)
    retries = int(self.request.retries or 0)

    def retry(exc: Exception) -> None:
        countdown = min(60, 2 ** (retries + 1))
        log.warning("render of job %s: transient error, retry in %d s: %s", job_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES)

    return run_render(runtime, job_id, retry=retry, last_try=retries >= MAX_RETRIES)
