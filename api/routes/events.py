"""``/v1/analyses/{id}/events``: a job's progress as Server-Sent Events.

The server polls the job store (every POLL_INTERVAL_S) and sends ``event: status`` with the
job resource whenever its status, stage or percent changed, a comment line every
HEARTBEAT_S so proxies keep the connection, and closes the stream after the terminal state.
A reconnecting client (``Last-Event-ID``) simply gets the current state first: every event
carries the whole job, so nothing in between needs replaying.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import StreamingResponse

from api import errors, problems
from api.deps import OwnerDep, RuntimeDep
from api.models import API_PREFIX, Analysis
from core.errors import JobNotFound
from core.jobs import Job
from core.runtime import Runtime
from core.wakeup import DatabaseChanges, PostgresChanges

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

POLL_INTERVAL_S = 0.5
HEARTBEAT_S = 15.0
# Milliseconds a browser's EventSource waits before reconnecting after a dropped stream.
RETRY_MS = 2000
JobId = Annotated[str, Path(description="Job id.", max_length=64)]
# One event of the stream, with the fields an EventSource reads (Open API 3.1 has the `schema`
# of an event stream describe each event; the `retry:` and `: keep-alive` lines are not events).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"const": "status"},
        "id": {"type": "string", "description": "The job's update time, seconds since the epoch."},
        "data": {
            "type": "string",
            "description": "The job resource, as `GET /v1/analyses/{id}` answers it.",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Analysis"},
        },
        "retry": {"type": "integer", "description": "Milliseconds to wait before reconnecting."},
    },
}


@router.get(
    "/{job_id}/events",
    operation_id="getAnalysisEvents",
    summary="Follow an analysis as Server-Sent Events",
    description=(
        "A `text/event-stream` of `event: status` messages, each with the job resource (the "
        "body of `GET /v1/analyses/{id}`) as `data`: one at once, then one whenever the status, "
        "stage or percent changes. A `: keep-alive` comment is sent every 15 s. The stream "
        "ends after the event with a terminal status (`succeeded`, `failed`, `canceled`). "
        "`Last-Event-ID` is accepted; the first event is always the current state."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The event stream.",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        **problems.responses(errors.NotFound, errors.Unauthorized, errors.StoreUnavailable),
    },
)
async def analysis_events(
    job_id: JobId,
    request: Request,
    runtime: RuntimeDep,
    owner: OwnerDep,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=64, description="Id of the last event seen."),
    ] = None,
) -> StreamingResponse:
    # Checked before the stream starts, so an unknown id is a 404 problem, not an empty stream.
    job = await _get(runtime, job_id, owner)
    return StreamingResponse(
        _stream(request, runtime, job, owner),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            # nginx buffers responses by default, which would hold events back.
            "X-Accel-Buffering": "no",
        },
    )


async def _get(runtime: Runtime, job_id: str, owner: str) -> Job:
    try:
        return await anyio.to_thread.run_sync(lambda: runtime.jobs.get(job_id, owner=owner))
    except JobNotFound:
        raise errors.NotFound(f"analysis {job_id!r} not found") from None


# A held status request reads the job store first this soon, then less often (1.25 times longer each
# time, up to POLL_INTERVAL_S): a 5-second clip's job ends ~50 ms after its pickup, and is
# answered within a few ms of it, while a long job costs a read every half second.
FIRST_CHECK_S = 0.005
CHECK_GROWTH = 1.25


async def job_after_change(
    runtime: Runtime,
    job_id: str,
    owner: str,
    *,
    wait_s: float,
    changes: DatabaseChanges | PostgresChanges | None = None,
    until_finished: bool = False,
) -> Job:
    """The job once its status differs from what it is now, or after ``wait_s`` seconds, or at
    once when it is finished (or ``wait_s`` is 0). Raises NotFound for an unknown id, also when
    the job is deleted while waited for. ``until_finished``: a change to another unfinished
    status (queued → running) is not an answer; only the end of the job is.

    With ``changes`` available (the embedded store's writes seen through inotify, or the
    PostgreSQL store's status notifications), the job is read again whenever it may have
    changed, and at least every POLL_INTERVAL_S; otherwise FIRST_CHECK_S after the request,
    then less and less often.
    """
    # Taken before each read: a change between the read and the wait still wakes it. A wait
    # until the job ends is not woken by its start (the change names the new status).
    mark = changes.mark(job_id, finished_only=until_finished) if changes is not None else None
    job = await _get(runtime, job_id, owner)
    if wait_s <= 0 or job.status.finished:
        return job
    deadline = time.monotonic() + wait_s
    interval = FIRST_CHECK_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return job
        if changes is not None and mark is not None and changes.available:
            await changes.wait(mark, min(POLL_INTERVAL_S, left))
        else:
            await anyio.sleep(min(interval, left))
            interval = min(interval * CHECK_GROWTH, POLL_INTERVAL_S)
        mark = changes.mark(job_id, finished_only=until_finished) if changes is not None else None
        now = await _get(runtime, job_id, owner)
        if now.status.finished or (now.status is not job.status and not until_finished):
            return now
        job = now  # progress moved: answer with the newest state when the time is up


def _event(job: Job) -> str:
    data = Analysis.from_job(job).model_dump_json()
    # The id tells a reconnecting client where it was; the updated time orders a job's states.
    return f"id: {job.updated_at.timestamp():.6f}\nevent: status\ndata: {data}\n\n"


async def _stream(request: Request, runtime: Runtime, job: Job, owner: str) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    sent: tuple[str, str | None, float] | None = None
    last_write = time.monotonic()
    while True:
        state = (job.status.value, job.stage, job.percent)
        if state != sent:
            yield _event(job)
            sent, last_write = state, time.monotonic()
            if job.status.finished:
                return
        elif time.monotonic() - last_write >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_write = time.monotonic()
        await anyio.sleep(POLL_INTERVAL_S)
        if await request.is_disconnected():
            return
        try:
            job = await _get(runtime, job.id, owner)
        except errors.NotFound:
            # Deleted while followed: nothing more will ever change.
            return
