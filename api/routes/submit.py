"""``POST /v1/analyses``: take an upload, register its job, queue it.

The body is streamed into the blob store (``api.uploads``) and recognised by its bytes; the job
is created under the owner's job cap in one transaction (``core.jobs``), or answered from the
owner's cache, or found again by its ``Idempotency-Key``; then its id is published to the queue
of its priority (``core.runtime``). Everything after that is ``api.routes.analyses``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Request, Response
from starlette.requests import ClientDisconnect

from api import errors, problems, uploads
from api.deps import OwnerDep, RequestIdDep, RuntimeDep
from api.models import API_PREFIX, Analysis, display_filename
from core.errors import BrokerUnavailable as PublishFailed
from core.errors import CallbackRefused, TooManyActiveJobs
from core.followups import enqueue_webhook
from core.jobs import ANONYMOUS, Job, new_job_id
from core.names import DEFAULT_PROFILE, PROFILES, Priority, upload_key
from core.runtime import Runtime
from core.webhooks import MAX_URL_LENGTH, Allowlist, allowlist, check_callback_url

log = logging.getLogger("earshot.api")

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

MAX_CALLBACK_URL = MAX_URL_LENGTH
# nginx's status for "the client closed the connection before the answer"; never sent.
CLIENT_CLOSED_REQUEST = 499


# OpenAPI links: the id in a created job's body is the job_id of every per-job operation, so a
# client generator (or a stateful fuzzer) can follow a submit to its job, result and plots. Each
# link is named after the operationId it leads to.
_JOB_OPERATIONS = {
    "getAnalysis": "The job.",
    "getAnalysisResult": "Its result, once succeeded.",
    "getAnalysisEvents": "Its progress as Server-Sent Events.",
    "getAnalysisWaveform": "Its waveform peaks.",
    "getAnalysisSpectrogram": "Its spectrogram image.",
    "getAnalysisAudio": "Its uploaded audio (HTTP Range).",
    "getAnalysisAudioFeatures": "Its result as Spotify's audio-features object.",
    "getAnalysisAudioAnalysis": "Its result as Spotify's audio-analysis object.",
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
