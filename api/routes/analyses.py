"""``/v1/analyses``: follow a job, list jobs, fetch the result, cancel (submitting is
``api.routes.submit``)."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from enum import StrEnum
from pathlib import PurePath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from analysis.schema import ResultDocument
from api import errors, problems
from api.deps import OwnerDep, RuntimeDep
from api.models import API_PREFIX, Analysis, AnalysisPage
from api.routes.events import job_after_change
from core.errors import BlobNotFound, JobNotFound
from core.followups import enqueue_webhook
from core.jobs import Job
from core.names import (
    FRAMES_CSV,
    FRAMES_NPZ,
    RESULT_JSON,
    SEGMENTS_JSON,
    JobStatus,
)
from core.runtime import Runtime

log = logging.getLogger("earshot.api")

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

# Results never change once written (a new analyzer version makes a new job), so clients and
# private caches may keep them forever.
IMMUTABLE = "private, max-age=31536000, immutable"
JobId = Annotated[str, Path(description="Job id.", max_length=64)]


class Until(StrEnum):
    """What a held ``GET /v1/analyses/{id}?wait=`` waits for."""

    CHANGE = "change"
    FINISHED = "finished"


class ResultFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    NPZ = "npz"
    SEGMENTS = "segments"


# format -> (file under the result prefix, media type)
RESULT_FILES: dict[ResultFormat, tuple[str, str]] = {
    ResultFormat.JSON: (RESULT_JSON, "application/json"),
    ResultFormat.CSV: (FRAMES_CSV, "text/csv; charset=utf-8"),
    # An .npz is a zip archive of .npy arrays (numpy.savez).
    ResultFormat.NPZ: (FRAMES_NPZ, "application/zip"),
    ResultFormat.SEGMENTS: (SEGMENTS_JSON, "application/json"),
}
# The file name a download gets, after the upload's stem.
EXTENSIONS = {ResultFormat.SEGMENTS: "segments.json"}


@router.get(
    "",
    operation_id="listAnalyses",
    response_model=AnalysisPage,
    summary="List analyses",
    description="Your jobs, newest first, a page at a time. Pass `next_cursor` back as "
    "`cursor` for the next page.",
    responses=problems.responses(
        errors.InvalidCursor, errors.Unauthorized, errors.InvalidRequest, errors.StoreUnavailable
    ),
)
def list_analyses(
    runtime: RuntimeDep,
    owner: OwnerDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> AnalysisPage:
    try:
        page, next_cursor = runtime.jobs.list(
            owner=owner, status=status, limit=limit, cursor=cursor
        )
    except ValueError:
        raise errors.InvalidCursor(
            f"cursor {cursor!r} was not made by this service; start again without one"
        ) from None
    return AnalysisPage(items=[Analysis.from_job(j) for j in page], next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    operation_id="getAnalysis",
    response_model=Analysis,
    summary="Get an analysis",
    description="The job: its status, progress, error when failed, and links to its result. "
    "With `wait`, a queued or running job's answer is held until its status changes (queued → "
    "running → succeeded, failed or canceled) or `wait` seconds pass, whichever comes first: "
    "one request per change instead of a poll every so often. With `until=finished` as well, "
    "the answer is held past `running` until the job has ended (or `wait` seconds pass): one "
    "request for a client that only wants the outcome. The server holds a request at most "
    "`EARSHOT_STATUS_WAIT_MAX_S` (30 s by default).",
    responses=problems.responses(errors.NotFound, errors.Unauthorized, errors.StoreUnavailable),
)
async def get_analysis(
    job_id: JobId,
    request: Request,
    runtime: RuntimeDep,
    owner: OwnerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=60,
            description="Seconds to hold the answer while the job's status stays the same "
            "(0, the default: answer at once).",
        ),
    ] = 0.0,
    until: Annotated[
        Until,
        Query(
            description="With `wait`: `change` (the default) answers at the first status "
            "change; `finished` only once the job has succeeded, failed or been canceled.",
        ),
    ] = Until.CHANGE,
) -> Analysis:
    job = await job_after_change(
        runtime,
        job_id,
        owner,
        wait_s=min(wait, runtime.settings.status_wait_max_s),
        changes=getattr(request.app.state, "db_changes", None),
        until_finished=until is Until.FINISHED,
    )
    return Analysis.from_job(job)


def _job(runtime: Runtime, job_id: str, owner: str) -> Job:
    try:
        return runtime.jobs.get(job_id, owner=owner)
    except JobNotFound:
        raise errors.NotFound(f"analysis {job_id!r} not found") from None


@router.get(
    "/{job_id}/result",
    operation_id="getAnalysisResult",
    summary="Get the result of an analysis",
    description=(
        "The result of a succeeded job: `format=json` (default) is the result document; "
        "`csv` and `npz` are the per-frame features; `segments` is the JSON list of the "
        "file's segments (docs/result.md, Segments; 404 for a result made before segments "
        "were stored). Results are immutable: they carry an `ETag` and may be cached forever; "
        "`If-None-Match` answers 304."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The result file: the result document (docs/result.md) for "
            "`format=json`, as the worker stored it.",
            # Documentation only: the route streams the stored bytes, nothing re-serialises
            # them through this type.
            "model": ResultDocument,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
            },
            "headers": {
                "ETag": {"schema": {"type": "string"}},
                "Content-Disposition": {"schema": {"type": "string"}},
            },
        },
        304: {"description": "Not modified (the `If-None-Match` ETag matches)."},
        **problems.responses(
            errors.NotFound,
            errors.NotFinished,
            errors.JobFailed,
            errors.JobCanceled,
            errors.Unauthorized,
            errors.InvalidRequest,
            errors.StoreUnavailable,
        ),
    },
)
def get_result(
    job_id: JobId,
    runtime: RuntimeDep,
    owner: OwnerDep,
    format: Annotated[ResultFormat, Query(description="`json`, `csv`, `npz` or `segments`.")] = (
        ResultFormat.JSON
    ),
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    job = succeeded_job(runtime, job_id, owner, what="result")
    name, media_type = RESULT_FILES[format]
    key = (job.result_prefix or "") + name
    etag = blob_etag(key)
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Content-Disposition": content_disposition(
            job.filename, EXTENSIONS.get(format, format.value), job.id
        ),
    }
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Cache-Control")})
    try:
        headers["Content-Length"] = str(runtime.blobs.size(key))
    except BlobNotFound:
        if format is ResultFormat.SEGMENTS:
            raise errors.NotFound(
                f"analysis {job.id} has no stored segments: its analyzer version predates them; "
                "submit the file again for a new analysis"
            ) from None
        log.error("job %s succeeded but %s is missing", job.id, key)
        raise errors.ApiError(f"the stored result of analysis {job.id} is missing") from None
    return StreamingResponse(runtime.blobs.iter_chunks(key), media_type=media_type, headers=headers)


def succeeded_job(runtime: Runtime, job_id: str, owner: str, *, what: str) -> Job:
    """The job if it succeeded; else the problem that says why it has no ``what`` (yet)."""
    job = _job(runtime, job_id, owner)
    if job.status is JobStatus.FAILED:
        raise errors.JobFailed(
            f"analysis {job.id} failed, so it has no {what}: {job.error_message or job.error_code}",
            extra={"error": {"code": job.error_code, "message": job.error_message}},
        )
    if job.status is JobStatus.CANCELED:
        raise errors.JobCanceled(f"analysis {job.id} was canceled; it has no {what}")
    if job.status is not JobStatus.SUCCEEDED or not job.result_prefix:
        raise errors.NotFinished(
            f"analysis {job.id} is {job.status.value}; poll {API_PREFIX}/{job.id} until it "
            f"succeeds (its {what} comes then)",
            headers={"Retry-After": "1"},
        )
    return job


def blob_etag(key: str) -> str:
    """The ETag of a stored result file: a blob under a result prefix is never rewritten, so
    its key names its bytes."""
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in candidates


def content_disposition(filename: str, extension: str, job_id: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact name as RFC 5987 ``filename*``."""
    stem = PurePath(filename).stem or f"analysis-{job_id}"
    full = f"{stem}.{extension}"
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    ascii_stem = "".join(c if c.isalnum() or c in " ._-()" else "_" for c in ascii_stem).strip()
    ascii_name = f"{ascii_stem or 'analysis-' + job_id}.{extension}"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(full, safe='')}"


@router.delete(
    "/{job_id}",
    operation_id="cancelAnalysis",
    response_model=Analysis,
    summary="Cancel an analysis",
    description="Cancel a queued or running job; it answers with the job, now `canceled`. A "
    "running analysis stops at its next progress step. A finished job cannot be canceled "
    "(409 `already_finished`).",
    responses=problems.responses(
        errors.NotFound, errors.AlreadyFinished, errors.Unauthorized, errors.StoreUnavailable
    ),
)
def cancel_analysis(job_id: JobId, runtime: RuntimeDep, owner: OwnerDep) -> Analysis:
    before = _job(runtime, job_id, owner)
    if before.status.finished:
        raise errors.AlreadyFinished(
            f"analysis {job_id} already {before.status.value}; nothing to cancel"
        )
    job = runtime.jobs.cancel(job_id, owner=owner)
    if job.status is not JobStatus.CANCELED:
        raise errors.AlreadyFinished(
            f"analysis {job_id} finished ({job.status.value}) before it could be canceled"
        )
    if before.status is JobStatus.QUEUED and job.upload_key:
        # No worker will ever claim a canceled job, so nobody else would delete its upload; a
        # running job's worker deletes it when it notices the cancellation.
        runtime.blobs.delete(job.upload_key)
    enqueue_webhook(runtime, job)
    return Analysis.from_job(job)
