"""``/v1/analyses``: submit audio, follow the job, fetch the result, cancel."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from enum import StrEnum
from pathlib import PurePath
from typing import Annotated, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from analysis.schema import ResultDocument
from api import errors, problems, uploads
from api.deps import OwnerDep, RequestIdDep, RuntimeDep
from api.models import API_PREFIX, Analysis, AnalysisPage, display_filename
from core.errors import BlobNotFound, CallbackRefused, JobNotFound, TooManyActiveJobs
from core.errors import BrokerUnavailable as PublishFailed
from core.followups import enqueue_webhook
from core.jobs import ANONYMOUS, Job, new_job_id
from core.names import (
    DEFAULT_PROFILE,
    FRAMES_CSV,
    FRAMES_NPZ,
    PROFILES,
    RESULT_JSON,
    JobStatus,
    Priority,
    upload_key,
)
from core.runtime import Runtime
from core.webhooks import MAX_URL_LENGTH, Allowlist, allowlist, check_callback_url

log = logging.getLogger("earshot.api")

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

# Results never change once written (a new analyzer version makes a new job), so clients and
# private caches may keep them forever.
IMMUTABLE = "private, max-age=31536000, immutable"
MAX_CALLBACK_URL = MAX_URL_LENGTH
# nginx's status for "the client closed the connection before the answer"; never sent.
CLIENT_CLOSED_REQUEST = 499
JobId = Annotated[str, Path(description="Job id.", max_length=64)]


class ResultFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    NPZ = "npz"


# format -> (file under the result prefix, media type)
RESULT_FILES: dict[ResultFormat, tuple[str, str]] = {
    ResultFormat.JSON: (RESULT_JSON, "application/json"),
    ResultFormat.CSV: (FRAMES_CSV, "text/csv; charset=utf-8"),
    # An .npz is a zip archive of .npy arrays (numpy.savez).
    ResultFormat.NPZ: (FRAMES_NPZ, "application/zip"),
}

# OpenAPI links: the id in a created job's body is the job_id of every per-job operation, so a
# client generator (or a stateful fuzzer) can follow a submit to its job, result and plots. Each
# link is named after the operationId it leads to.
_JOB_OPERATIONS = {
    "getAnalysis": "The job.",
    "getAnalysisResult": "Its result, once succeeded.",
    "getAnalysisEvents": "Its progress as Server-Sent Events.",
    "getAnalysisWaveform": "Its waveform peaks.",
    "getAnalysisSpectrogram": "Its spectrogram image.",
    "cancelAnalysis": "Cancel it.",
}
JOB_LINKS: dict[str, Any] = {
    operation_id: {
        "operationId": operation_id,
        "parameters": {"job_id": "$response.body#/id"},
        "description": description,
    }
    for operation_id, description in _JOB_OPERATIONS.items()
}


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            # An empty part is refused (422 invalid_request).
                            "minLength": 1,
                            "description": "The audio file (WAV, AIFF, FLAC, Ogg, MP3, AAC, "
                            "MP4/M4A, CAF, WebM/Matroska …). Recognised by its bytes, not its "
                            "name.",
                        },
                        "profile": {
                            "type": "string",
                            "enum": list(PROFILES),
                            "default": DEFAULT_PROFILE,
                            "description": "Analysis profile: `standard` (hop 512) or `fast` "
                            "(hop 1024, fewer mel bands).",
                        },
                        "priority": {
                            "type": "string",
                            "enum": [p.value for p in Priority],
                            "default": Priority.INTERACTIVE.value,
                            "description": "`interactive` for a person waiting, `batch` for "
                            "bulk work; batch jobs never delay interactive ones by more than "
                            "one task.",
                        },
                        "callback_url": {
                            "type": "string",
                            "format": "uri",
                            "maxLength": MAX_CALLBACK_URL,
                            "description": "http(s) URL POSTed when the job ends; its host "
                            "must resolve to public addresses (see docs/webhooks.md).",
                        },
                    },
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        },
    }
}


@router.post(
    "",
    operation_id="createAnalysis",
    status_code=202,
    response_model=Analysis,
    summary="Submit audio for analysis",
    description=(
        "Upload one audio file as multipart/form-data (field `file`). The body is streamed "
        "to storage as it arrives and hashed; uploads over the size limit are refused with "
        "413 while streaming, and files whose bytes are not a known audio container (text, "
        "images, archives, executables, whatever their name or Content-Type) with 415.\n\n"
        "Answers **202** with the queued job and `Location`. When the same API key already had "
        "the same bytes analysed with the same profile and analyzer version, the job is created "
        "already `succeeded` with `cached: true` (still 202, nothing queued); another key's "
        "result is never reused.\n\n"
        "With API keys, each key may have `EARSHOT_MAX_CONCURRENT_JOBS_PER_KEY` jobs queued or "
        "running; beyond that the answer is 429 `too_many_jobs` with `Retry-After` and the "
        "upload is not kept.\n\n"
        "`Idempotency-Key`: sending the same key again with the same file and profile answers "
        "**200** with the original job instead of creating another; the same key with "
        "different content is a 422 `idempotency_key_reused`. If the queue is down the answer "
        "is 503 `broker_unavailable` with `Retry-After`, and the key may be reused."
    ),
    responses={
        200: {
            "model": Analysis,
            "description": "Idempotent replay: the job made earlier.",
            "links": JOB_LINKS,
        },
        202: {
            "description": "Job created (queued, or succeeded from cache).",
            "headers": {
                "Location": {"description": "URL of the job.", "schema": {"type": "string"}}
            },
            "links": JOB_LINKS,
        },
        **problems.responses(
            errors.Unauthorized,
            errors.UploadTooLarge,
            errors.UploadTimeout,
            errors.TooManyUploads,
            errors.UnsupportedMediaType,
            errors.InvalidRequest,
            errors.InvalidCallbackUrl,
            errors.IdempotencyKeyReused,
            errors.TooManyJobs,
            errors.BrokerUnavailable,
            errors.StoreUnavailable,
        ),
    },
    openapi_extra=_UPLOAD_BODY,
)
async def create_analysis(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    owner: OwnerDep,
    request_id: RequestIdDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Client-chosen key making retries of this request safe.",
        ),
    ] = None,
) -> Analysis | Response:
    jobs = runtime.jobs
    if owner != ANONYMOUS:
        # A cheap early refusal, before the body is read; JobStore.create decides atomically.
        active = await anyio.to_thread.run_sync(lambda: jobs.count_active(owner=owner))
        limit = runtime.settings.max_concurrent_jobs_per_key
        if active >= limit:
            raise _too_many_jobs(active, limit)
    job_id = new_job_id()
    key = upload_key(job_id)
    slots: uploads.UploadSlots = request.app.state.upload_slots
    try:
        with slots.take():
            upload = await uploads.receive(
                request,
                blobs=runtime.blobs,
                key=key,
                max_bytes=runtime.settings.max_upload_bytes,
                slots=slots,
            )
    except ClientDisconnect:
        # A client hanging up is not an error of ours (receive logged it at INFO). Nobody
        # reads this answer, the server drops it; it is the status the metrics count.
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    try:
        job, created = await anyio.to_thread.run_sync(
            lambda: _register(runtime, upload, job_id, key, owner, request_id, idempotency_key)
        )
    except BaseException:
        runtime.blobs.delete(key)
        raise
    if not created:
        response.status_code = 200
    else:
        response.headers["Location"] = f"{API_PREFIX}/{job.id}"
    return Analysis.from_job(job)


def _register(
    runtime: Runtime,
    upload: uploads.Upload,
    job_id: str,
    key: str,
    owner: str,
    request_id: str,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Create (or find) the job for a stored upload; publish it. Returns ``(job, created)``."""
    jobs, blobs = runtime.jobs, runtime.blobs
    profile, priority, callback_url = _form_fields(
        upload.fields, allow=allowlist(runtime.settings.webhook_allow)
    )

    def replay(existing: Job) -> tuple[Job, bool]:
        blobs.delete(key)
        if existing.sha256 != upload.sha256 or existing.profile != profile:
            raise errors.IdempotencyKeyReused(
                f"Idempotency-Key {idempotency_key!r} was used for job {existing.id} with "
                "different content or profile; use a new key for a new file"
            )
        return existing, False

    if idempotency_key is not None:
        existing = jobs.find_by_idempotency_key(owner, idempotency_key)
        if existing is not None:
            return replay(existing)
    # The per-key limit is checked again in the insert's own transaction: concurrent uploads
    # all passed the early check while their bodies streamed in.
    max_active = None if owner == ANONYMOUS else runtime.settings.max_concurrent_jobs_per_key
    try:
        job, created = jobs.create(
            job_id=job_id,
            owner=owner,
            filename=display_filename(upload.filename),
            size_bytes=upload.size_bytes,
            sha256=upload.sha256,
            profile=profile,
            priority=priority.value,
            upload_key=key,
            idempotency_key=idempotency_key,
            request_id=request_id,
            callback_url=callback_url,
            extra={"format": upload.format},
            max_active=max_active,
        )
    except TooManyActiveJobs as exc:
        blobs.delete(key)
        raise _too_many_jobs(exc.active, exc.limit) from None
    if not created:  # the same key won a race with us
        return replay(job)

    # Only this owner's results: another key's would reveal that they analysed these bytes.
    source = jobs.find_cached_result(
        owner=owner,
        sha256=upload.sha256,
        profile=profile,
        analyzer_version=runtime.analyzer_version,
    )
    if source is not None and source.result_prefix:
        jobs.mark_succeeded(
            job.id,
            result_prefix=source.result_prefix,
            analyzer_version=runtime.analyzer_version,
            cached=True,
        )
        # The job never runs, and the source job keeps its own copy of the same bytes.
        blobs.delete(key)
        log.info("job %s reuses the result of job %s", job.id, source.id)
        done = jobs.get(job.id)
        enqueue_webhook(runtime, done)
        return done, True

    try:
        runtime.publish(job)
    except PublishFailed as exc:
        # Never leave a job that says "queued" with no message behind it.
        jobs.mark_failed(job.id, code="broker_unavailable", message=str(exc))
        jobs.release_idempotency_key(job.id)
        blobs.delete(key)
        raise errors.BrokerUnavailable(
            "the job queue is unreachable; nothing was queued, retry later",
            headers={"Retry-After": str(problems.RETRY_AFTER_S)},
            extra={"job_id": job.id},
        ) from exc
    return job, True


def _too_many_jobs(active: int, limit: int) -> errors.TooManyJobs:
    return errors.TooManyJobs(
        f"{active} analyses are queued or running for this key; the limit is {limit} "
        "(EARSHOT_MAX_CONCURRENT_JOBS_PER_KEY)",
        headers={"Retry-After": str(problems.RETRY_AFTER_S)},
    )


def _form_fields(fields: dict[str, str], *, allow: Allowlist) -> tuple[str, Priority, str | None]:
    profile = fields.get("profile") or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise errors.InvalidRequest(
            f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}"
        )
    priority_name = fields.get("priority") or Priority.INTERACTIVE.value
    try:
        priority = Priority(priority_name)
    except ValueError:
        raise errors.InvalidRequest(
            f"unknown priority {priority_name!r}; choose one of "
            f"{', '.join(p.value for p in Priority)}"
        ) from None
    callback_url = fields.get("callback_url") or None
    if callback_url is not None:
        # Resolves the host (bounded, in this worker thread): a URL whose host is loopback,
        # private … is refused here, before a job exists, and checked again at every delivery.
        try:
            check_callback_url(callback_url, allow=allow)
        except CallbackRefused as exc:
            raise errors.InvalidCallbackUrl(str(exc)) from None
    return profile, priority, callback_url


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
    description="The job: its status, progress, error when failed, and links to its result.",
    responses=problems.responses(errors.NotFound, errors.Unauthorized, errors.StoreUnavailable),
)
def get_analysis(job_id: JobId, runtime: RuntimeDep, owner: OwnerDep) -> Analysis:
    return Analysis.from_job(_job(runtime, job_id, owner))


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
        "`csv` and `npz` are the per-frame features. Results are immutable: they carry an "
        "`ETag` and may be cached forever; `If-None-Match` answers 304."
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
    format: Annotated[ResultFormat, Query(description="`json`, `csv` or `npz`.")] = (
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
        "Content-Disposition": content_disposition(job.filename, format.value, job.id),
    }
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Cache-Control")})
    try:
        headers["Content-Length"] = str(runtime.blobs.size(key))
    except BlobNotFound:
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
