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
from dataclasses import replace

from celery import Task, shared_task

from core.errors import BlobNotFound, JobNotFound
from core.followups import store_error
from core.names import (
    RENDER_ERROR_JSON,
    RENDER_TASK,
    RESULT_JSON,
    SPECTROGRAM_PNG,
    WAVEFORM_JSON,
    JobStatus,
    upload_key,
)
from core.runtime import Runtime
from tasks.outcomes import TRANSIENT_ERRORS
from tasks.steps import limits_of, retrier, runtime_of

log = logging.getLogger(__name__)

# Retries of a transient store error before the render is given up.
MAX_RETRIES = 3

UPLOAD_MISSING = "upload_missing"
UNREADABLE_AUDIO = "unreadable_audio"
RENDER_FAILED = "render_failed"


def run_render(
    runtime: Runtime, job_id: str, *, retry: Callable[[Exception], None], last_try: bool
) -> str:
    """The task body; returns what happened (``rendered``, ``skipped``, ``failed``).

    ``retry(exc)`` schedules another delivery for a transient error; on the ``last_try`` the
    error is stored instead.
    """
    # The analysis stack (librosa, numpy) loads when a task runs, not with the task module.
    from analysis.errors import InvalidAudio
    from analysis.limits import DEFAULT_MAX_DECODED_BYTES
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
    # Drawn under the library's default bound on the decoded size, as the plots always were,
    # not EARSHOT_MAX_DECODED_BYTES: the audio of a succeeded job already passed the analysis.
    limits = replace(limits_of(settings), max_decoded_bytes=DEFAULT_MAX_DECODED_BYTES)
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


@shared_task(name=RENDER_TASK, bind=True, ignore_result=True, acks_late=True)
def render(self: Task, job_id: str) -> str:
    """Draw and store the waveform peaks and spectrogram of job ``job_id``."""
    runtime = runtime_of(self)
    retries = int(self.request.retries or 0)
    retry = retrier(self, f"render of job {job_id}", max_retries=MAX_RETRIES)
    return run_render(runtime, job_id, retry=retry, last_try=retries >= MAX_RETRIES)
