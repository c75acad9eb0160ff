"""``GET /v1/analyses/{id}/audio``: the uploaded file itself, for a player, with HTTP Range.

A browser's ``<audio>`` asks for byte ranges to seek (RFC 9110 section 14), so this route
answers ``Range: bytes=…`` with 206 and the bytes at those offsets, read from the blob store as
a range (a seek on local disk, a ranged GET on S3), never the whole file. The upload of a job
never changes, so its SHA-256 is a strong ETag (``If-None-Match``, ``If-Range``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import StreamingResponse

from api import errors, problems
from api.deps import OwnerDep, RuntimeDep
from api.models import API_PREFIX
from api.routes.analyses import IMMUTABLE, content_disposition, etag_matches
from core.blobs import BlobStore
from core.errors import BlobNotFound, JobNotFound
from core.jobs import Job
from core.names import upload_key
from core.runtime import Runtime

router = APIRouter(prefix=API_PREFIX, tags=["analyses"])

JobId = Annotated[str, Path(description="Job id.", max_length=64)]

# The container found in the upload's first bytes (api.uploads.sniff_audio) -> media type.
MEDIA_TYPES = {
    "wav": "audio/wav",
    "aiff": "audio/aiff",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "mpeg": "audio/mpeg",
    "mp4": "audio/mp4",
    "caf": "audio/x-caf",
    "matroska": "audio/x-matroska",
    "au": "audio/basic",
    "amr": "audio/amr",
    "wavpack": "audio/x-wavpack",
    "ape": "audio/x-ape",
}
UNKNOWN_MEDIA_TYPE = "application/octet-stream"
# More ranges than this in one request is refused (416): players ask for one, and a long list
# of small ranges is how a client makes a server do much work for little (RFC 9110 14.2).
MAX_RANGES = 16
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included (as a Content-Range says)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str, size: int) -> list[ByteRange] | None:
    """The ranges of a ``Range`` header within a file of ``size`` bytes (RFC 9110 14.1.2).

    Returns None when the header is to be ignored (the whole file answers 200): another unit
    than ``bytes``, or a syntax error, such as a last position before the first. Returns []
    when it is valid but no range is satisfiable (416). Ranges past the end are cut at it;
    overlapping and adjacent ones are merged (RFC 9110 15.3.7.2), so the result is sorted.
    """
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        return None  # a range set has at least one range (empty list elements are allowed)
    ranges: list[ByteRange] = []
    for item in filter(None, items):
        first, dash, last = item.partition("-")
        first, last = first.strip(), last.strip()
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if (
            not dash
            or not (first or last)
            or not all(_DIGITS.fullmatch(p) for p in (first, last) if p)
        ):
            return None
        if not first:  # "-N": the last N bytes
            suffix = int(last)
            if suffix > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None
        if start < size:
            ranges.append(ByteRange(start, min(end, size - 1)))
    merged: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1].end + 1:
            merged[-1] = ByteRange(merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    return merged


@router.get(
    "/{job_id}/audio",
    operation_id="getAnalysisAudio",
    summary="Get the uploaded audio of an analysis",
    description=(
        "The file that was uploaded, byte for byte, to play while looking at the result. "
        "`Content-Type` is that of the container recognised from its bytes (`audio/flac`, "
        "`audio/ogg`, `audio/mpeg`, `audio/mp4`, `audio/wav`, …). Available from upload on, "
        "while the job is queued, running or finished, and as long as the upload is stored "
        "(a canceled job's is deleted: 404 `audio_unavailable`).\n\n"
        "HTTP Range requests (RFC 9110): `Accept-Ranges: bytes`; `Range: bytes=0-1023`, "
        "`bytes=1024-` or `bytes=-500` answers **206** with `Content-Range` and those bytes; "
        "several ranges answer 206 `multipart/byteranges` (overlapping ones merged, at most "
        "16). A range starting past the end answers 416 `range_not_satisfiable` with "
        "`Content-Range: bytes */<size>`; a header that is not a valid `bytes` range is "
        "ignored (200, the whole file). `If-Range` with the current `ETag` keeps the range, "
        "any other validator gets the whole file. Immutable: `ETag` (the file's SHA-256) and "
        "`If-None-Match` answer 304. Same API key rules as the result."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The whole file.",
            "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {
                "ETag": {"schema": {"type": "string"}},
                "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
            },
        },
        206: {
            "description": "The requested range (one), or ranges as `multipart/byteranges`.",
            "content": {
                "audio/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/byteranges": {"schema": {"type": "string", "format": "binary"}},
            },
            "headers": {
                "Content-Range": {
                    "description": "`bytes <first>-<last>/<size>` (single range).",
                    "schema": {"type": "string"},
                },
                "ETag": {"schema": {"type": "string"}},
            },
        },
        304: {"description": "Not modified (the `If-None-Match` ETag matches)."},
        **problems.responses(
            errors.NotFound,
            errors.AudioUnavailable,
            errors.RangeNotSatisfiable,
            errors.Unauthorized,
            errors.StoreUnavailable,
        ),
    },
)
def get_audio(
    job_id: JobId,
    runtime: RuntimeDep,
    owner: OwnerDep,
    range_header: Annotated[
        str | None,
        Header(alias="Range", max_length=1024, description="`bytes=<first>-<last>`, …"),
    ] = None,
    if_range: Annotated[
        str | None, Header(alias="If-Range", max_length=256, description="An ETag.")
    ] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    try:
        job = runtime.jobs.get(job_id, owner=owner)
    except JobNotFound:
        raise errors.NotFound(f"analysis {job_id!r} not found") from None
    key, size = _stored_audio(runtime, job)
    media_type = MEDIA_TYPES.get(str(job.extra.get("format", "")), UNKNOWN_MEDIA_TYPE)
    etag = f'"{job.sha256[:32]}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Content-Disposition": _inline(job),
    }
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    ranges = None
    # RFC 9110 13.1.5: only a strong, exactly equal validator keeps the range.
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        ranges = parse_range(range_header, size)
    blobs = runtime.blobs
    if ranges is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(
            blobs.iter_range(key, 0, size), media_type=media_type, headers=headers
        )
    if not ranges or len(ranges) > MAX_RANGES:
        raise errors.RangeNotSatisfiable(
            f"no range of {range_header!r} lies within the {size} bytes of the file"
            if not ranges
            else f"{len(ranges)} ranges asked for; at most {MAX_RANGES} in one request",
            headers={"Content-Range": f"bytes */{size}"},
        )
    if len(ranges) == 1:
        (only,) = ranges
        headers["Content-Range"] = only.content_range(size)
        headers["Content-Length"] = str(only.length)
        return StreamingResponse(
            blobs.iter_range(key, only.start, only.length),
            status_code=206,
            media_type=media_type,
            headers=headers,
        )
    boundary = secrets.token_hex(16)
    part_heads = [
        (
            f"\r\n--{boundary}\r\nContent-Type: {media_type}\r\n"
            f"Content-Range: {r.content_range(size)}\r\n\r\n"
        ).encode()
        for r in ranges
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    total = sum(len(h) + r.length for h, r in zip(part_heads, ranges, strict=True)) + len(tail)
    headers["Content-Length"] = str(total)
    return StreamingResponse(
        _multipart(blobs, key, ranges, part_heads, tail),
        status_code=206,
        media_type=f"multipart/byteranges; boundary={boundary}",
        headers=headers,
    )


def _multipart(
    blobs: BlobStore, key: str, ranges: list[ByteRange], heads: list[bytes], tail: bytes
) -> Iterator[bytes]:
    for head, r in zip(heads, ranges, strict=True):
        yield head
        yield from blobs.iter_range(key, r.start, r.length)
    yield tail


def _stored_audio(runtime: Runtime, job: Job) -> tuple[str, int]:
    """The blob key and size of the job's audio: its own upload, or for a job answered from
    the cache (whose own copy was deleted at once) the upload of the job it reused."""
    keys = [job.upload_key or upload_key(job.id)]
    if job.cached and job.analyzer_version:
        source = runtime.jobs.find_cached_result(
            owner=job.owner,
            sha256=job.sha256,
            profile=job.profile,
            analyzer_version=job.analyzer_version,
        )
        if source is not None and source.id != job.id:
            keys.append(source.upload_key or upload_key(source.id))
    for key in keys:
        try:
            return key, runtime.blobs.size(key)
        except BlobNotFound:
            continue
    raise errors.AudioUnavailable(
        f"the uploaded audio of analysis {job.id} ({job.status.value}) is no longer stored"
    )


def _inline(job: Job) -> str:
    """``inline`` (play it, do not save it), with the uploaded file's name."""
    path = PurePath(job.filename)
    extension = path.suffix.lstrip(".") or str(job.extra.get("format") or "audio")
    return content_disposition(job.filename, extension, job.id).replace("attachment", "inline", 1)
