"""What follows a finished job, queued by task name: its plots and its webhook.

The API (a batch job's first plot request, a cancel) and the task bodies (a job that ended)
both ask for these; neither imports the task that does the work. Queueing never raises: a
result stands without plots, and a job is unaffected by a notification that cannot be queued.
"""

from __future__ import annotations

import json
import logging

from core.jobs import Job, utcnow
from core.names import RENDER_ERROR_JSON, RENDER_TASK, WEBHOOK_TASK, Priority, Queue
from core.runtime import Runtime

log = logging.getLogger(__name__)

# render_error.json's code when the render queue could not be reached.
NOT_QUEUED = "render_not_queued"


def store_error(runtime: Runtime, prefix: str, code: str, message: str) -> None:
    """Record why the plots of a result will not come (read by the plot endpoints)."""
    document = {"code": code, "message": message[:500]}
    runtime.blobs.put_bytes(prefix + RENDER_ERROR_JSON, json.dumps(document).encode())


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
    runtime.jobs.set_extra(job.id, {**job.extra, RENDER_REQUESTED: utcnow().isoformat()})
    enqueue_render(runtime, job)
    return True


def enqueue_webhook(runtime: Runtime, job: Job) -> None:
    """Queue the notification that ``job`` ended, if it has a callback URL.

    Never raises: a notification that cannot be queued is logged, and the job is unaffected.
    """
    if not job.callback_url:
        return
    try:
        runtime.celery.send_task(
            WEBHOOK_TASK, args=[job.id], queue=Queue.WEBHOOK.value, retry=False
        )
    except Exception as exc:  # kombu raises many types for "broker unreachable"
        log.warning("webhook of job %s not queued: %s", job.id, exc)
