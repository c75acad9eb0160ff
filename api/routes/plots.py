"""``/v1/analyses/{id}/waveform.json`` and ``/spectrogram.png``: the plots of a result.

The render task draws them after the analysis succeeded (interactive jobs at once, batch jobs
when a plot is first asked for), so for a moment a succeeded job has no plots yet (409
``plot_pending``, retry); if they could not be drawn the answer is 404
``plot_unavailable`` with the reason, while the result itself stays available.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import StreamingResponse

from api import errors, problems
from api.deps import OwnerDep, RuntimeDep
from api.models import API_PREFIX
from api.routes.analyses import IMMUTABLE, blob_etag, etag_matches, succeeded_job
from core.errors import BlobNotFound
from core.followups import request_render
from core.jobs import Job
from core.names import RENDER_ERROR_JSON, SPECTROGRAM_PNG, WAVEFORM_JSON
from core.runtime import Runtime

log = logging.getLogger("earshot.api")

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

JobId = Annotated[str, Path(description="Job id.", max_length=64)]

_ERRORS = problems.responses(
    errors.NotFound,
    errors.PlotUnavailable,
    errors.NotFinished,
    errors.JobFailed,
    errors.JobCanceled,
    errors.PlotPending,
    errors.Unauthorized,
    errors.StoreUnavailable,
)


@router.get(
    "/{job_id}/waveform.json",
    operation_id="getAnalysisWaveform",
    summary="Get the waveform peaks of an analysis",
    description=(
        "Min/max pairs of the mono signal in the audiowaveform JSON format (version 2, as "
        "read by peaks.js): `sample_rate`, `samples_per_pixel`, `bits` (8: values -128..127), "
        "`length` pairs and `data` = `[min0, max0, min1, max1, …]`. About 100 pairs per second, "
        "at most 20 000. Drawn shortly after the job succeeds (a `batch` job: on the first "
        "request of a plot): until then 409 `plot_pending` with `Retry-After`. Immutable, "
        "with an `ETag`; `If-None-Match` answers 304."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The peaks.",
            "content": {"application/json": {"schema": {"type": "object"}}},
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        304: {"description": "Not modified (the `If-None-Match` ETag matches)."},
        **_ERRORS,
    },
)
def get_waveform(
    job_id: JobId,
    runtime: RuntimeDep,
    owner: OwnerDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    return _plot(runtime, job_id, owner, WAVEFORM_JSON, "application/json", if_none_match)


@router.get(
    "/{job_id}/spectrogram.png",
    operation_id="getAnalysisSpectrogram",
    summary="Get the spectrogram image of an analysis",
    description=(
        "A 1200 x 400 PNG of the log-mel spectrogram (time in seconds across, frequency in Hz "
        "up, 80 dB range) with the detected beats as vertical lines. Drawn shortly after the "
        "job succeeds (a `batch` job: on the first request of a plot): until then 409 "
        "`plot_pending` with `Retry-After`. Immutable, with an `ETag`; `If-None-Match` "
        "answers 304."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The image.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        304: {"description": "Not modified (the `If-None-Match` ETag matches)."},
        **_ERRORS,
    },
)
def get_spectrogram(
    job_id: JobId,
    runtime: RuntimeDep,
    owner: OwnerDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    return _plot(runtime, job_id, owner, SPECTROGRAM_PNG, "image/png", if_none_match)


def _plot(
    runtime: Runtime,
    job_id: str,
    owner: str,
    name: str,
    media_type: str,
    if_none_match: str | None,
) -> Response:
    job = succeeded_job(runtime, job_id, owner, what="plots")
    key = (job.result_prefix or "") + name
    etag = blob_etag(key)
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    try:
        headers["Content-Length"] = str(runtime.blobs.size(key))
    except BlobNotFound:
        raise _missing(runtime, job, name) from None
    return StreamingResponse(runtime.blobs.iter_chunks(key), media_type=media_type, headers=headers)


def _missing(runtime: Runtime, job: Job, name: str) -> errors.ApiError:
    """Why a plot is not there: still being drawn, or drawing it failed."""
    prefix = job.result_prefix or ""
    try:
        failure = json.loads(runtime.blobs.get_bytes(prefix + RENDER_ERROR_JSON))
    except BlobNotFound:
        # Batch jobs are drawn on first request (core.followups.request_render).
        request_render(runtime, job)
        return errors.PlotPending(
            f"the {name} of analysis {job.id} is being drawn; retry shortly",
            headers={"Retry-After": "1"},
        )
    return errors.PlotUnavailable(
        f"the {name} of analysis {job.id} could not be drawn: {failure.get('message', '')}; "
        "the result itself is available",
        extra={"render_error": {"code": failure.get("code"), "message": failure.get("message")}},
    )
