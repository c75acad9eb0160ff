"""``/v1/analyses/{id}/audio-features`` and ``/audio-analysis``: a result in Spotify's shape.

Built on request from the stored ``result.json`` (and ``segments.json``) by
``analysis.views``, which imports nothing heavy. A result never changes, so a view changes only
with the code that builds it: its ETag names the result, ``VIEWS_VERSION`` and the serving
analyzer version (whose score methods the view quotes for results of that version).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response

from analysis.version import ANALYZER_VERSION
from analysis.views import (
    VIEWS_VERSION,
    AudioAnalysis,
    AudioFeatures,
    audio_analysis,
    audio_features,
)
from api import errors, problems
from api.deps import OwnerDep, RuntimeDep
from api.models import API_PREFIX
from api.routes.analyses import IMMUTABLE, etag_matches, succeeded_job
from core.errors import BlobNotFound
from core.jobs import Job
from core.names import RESULT_JSON, SEGMENTS_JSON
from core.runtime import Runtime

log = logging.getLogger("earshot.api")

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

JobId = Annotated[str, Path(description="Job id.", max_length=64)]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]

_ERRORS = problems.responses(
    errors.NotFound,
    errors.NotFinished,
    errors.JobFailed,
    errors.JobCanceled,
    errors.Unauthorized,
    errors.StoreUnavailable,
)
_CACHING = (
    "Immutable, with an `ETag`; `If-None-Match` answers 304. Field by field, and how each "
    "differs from Spotify's: docs/spotify.md."
)


def _ok(description: str, model: type) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "model": model,
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        304: {"description": "Not modified (the `If-None-Match` ETag matches)."},
        **_ERRORS,
    }


@router.get(
    "/{job_id}/audio-features",
    operation_id="getAnalysisAudioFeatures",
    summary="Get the audio features of an analysis (Spotify's shape)",
    description=(
        "The result of a succeeded job as Spotify's audio-features object: `key` as a pitch "
        "class (-1: no key), `mode` 1/0, `time_signature` 3..7, `loudness` in LUFS, `tempo`, "
        "`duration_ms`, and the perceptual scores 0..1 (null when the method has no evidence), "
        "plus an `earshot` block naming the analyzer version and each score's method. " + _CACHING
    ),
    response_class=Response,
    responses=_ok("The audio features.", AudioFeatures),
)
def get_audio_features(
    job_id: JobId, runtime: RuntimeDep, owner: OwnerDep, if_none_match: IfNoneMatch = None
) -> Response:
    own = f"{API_PREFIX}/{job_id}"

    def build(job: Job, document: dict[str, Any]) -> dict[str, Any]:
        return dict(
            audio_features(
                document,
                id=job.id,
                track_href=own,
                analysis_url=f"{own}/audio-analysis",
            )
        )

    return _view(runtime, job_id, owner, "audio-features", if_none_match, build)


@router.get(
    "/{job_id}/audio-analysis",
    operation_id="getAnalysisAudioAnalysis",
    summary="Get the audio analysis of an analysis (Spotify's shape)",
    description=(
        "The result of a succeeded job as Spotify's audio-analysis object: `meta`, `track`, "
        "and the `bars`, `beats`, `tatums`, `sections` and `segments` of the file, each with "
        "`start`, `duration` (seconds) and `confidence`, plus an `earshot` block. " + _CACHING
    ),
    response_class=Response,
    responses=_ok("The audio analysis.", AudioAnalysis),
)
def get_audio_analysis(
    job_id: JobId, runtime: RuntimeDep, owner: OwnerDep, if_none_match: IfNoneMatch = None
) -> Response:
    def build(job: Job, document: dict[str, Any]) -> dict[str, Any]:
        prefix = job.result_prefix or ""
        try:
            segments = json.loads(runtime.blobs.get_bytes(prefix + SEGMENTS_JSON))
        except BlobNotFound:
            segments = None  # stored by an analyzer that kept no segments
        finished, started = job.finished_at, job.started_at
        return dict(
            audio_analysis(
                document,
                segments,
                timestamp=int(finished.timestamp()) if finished else None,
                analysis_time=(
                    (finished - started).total_seconds() if finished and started else None
                ),
            )
        )

    return _view(runtime, job_id, owner, "audio-analysis", if_none_match, build)


def _view(
    runtime: Runtime,
    job_id: str,
    owner: str,
    name: str,
    if_none_match: str | None,
    build: Callable[[Job, dict[str, Any]], dict[str, Any]],
) -> Response:
    job = succeeded_job(runtime, job_id, owner, what=name)
    key = (job.result_prefix or "") + RESULT_JSON
    tag = hashlib.sha256(
        f"{key}\0{name}\0{VIEWS_VERSION}\0{ANALYZER_VERSION}".encode()
    ).hexdigest()[:32]
    headers = {"ETag": f'"{tag}"', "Cache-Control": IMMUTABLE}
    if if_none_match is not None and etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    try:
        document = json.loads(runtime.blobs.get_bytes(key))
    except BlobNotFound:
        log.error("job %s succeeded but %s is missing", job.id, key)
        raise errors.ApiError(f"the stored result of analysis {job.id} is missing") from None
    body = json.dumps(build(job, document), ensure_ascii=False, allow_nan=False)
    return Response(body.encode(), media_type="application/json", headers=headers)
