"""Streaming multipart uploads: request body → blob store, hashed, size-limited and sniffed.

The body is parsed incrementally (python-multipart's push parser) while the file part is
written straight to the blob store, so memory stays flat, the size limit holds for chunked
uploads without Content-Length, and an upload rejected halfway leaves nothing behind (the blob
store only publishes a blob once its stream ends without error).

Uploads cannot starve the rest of the API: at most ``UploadSlots.limit`` stream at once (more
are refused before their body is read), each on a thread of the uploads' own limiter rather
than anyio's default one, which every sync route shares; and an upload that sends nothing for
``idle_timeout_s`` is dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from api import metrics
from api.errors import (
    InvalidRequest,
    TooManyUploads,
    UnsupportedMediaType,
    UploadTimeout,
    UploadTooLarge,
)
from api.problems import RETRY_AFTER_S
from core.blobs import BlobStore

log = logging.getLogger("earshot.api")

FILE_FIELD = "file"
# Enough of the file's head to tell every container below apart.
SNIFF_BYTES = 16
# Room for the multipart envelope (boundaries, part headers, small form fields) on top of the
# file itself: the whole body may exceed max_upload_bytes by this much, no more.
ENVELOPE_BYTES = 64 * 1024
MAX_FIELD_BYTES = 8 * 1024


@dataclass
class Upload:
    """What was received: the stored file's facts and the other (small) form fields."""

    filename: str | None = None
    size_bytes: int = 0
    sha256: str = ""
    format: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class UploadSlots:
    """How many uploads one API process streams at once, and how long one may send nothing.

    An upload waits for its client's bytes on a thread (the multipart parsing, hashing and
    blob writing are blocking). Those threads come from ``limiter``, never from anyio's default
    limiter, whose 40 tokens every sync route (``/readyz``, ``GET /v1/analyses`` …) needs: 40
    stalled uploads used to hold them all and every such route hung. ``take`` refuses an upload
    beyond ``limit`` at once, so no upload ever queues for a thread.
    """

    def __init__(self, limit: int, *, idle_timeout_s: float) -> None:
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s
        self.active = 0
        self.limiter = anyio.CapacityLimiter(limit)

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot for the enclosed upload; raise TooManyUploads when none is free."""
        # Only the event loop's thread counts, so a plain integer needs no lock.
        if self.active >= self.limit:
            raise TooManyUploads(
                f"{self.active} uploads are in progress; the limit is {self.limit} "
                "(EARSHOT_MAX_CONCURRENT_UPLOADS); retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.active += 1
        in_progress = metrics.uploads_in_progress()
        in_progress.inc()
        try:
            yield
        finally:
            self.active -= 1
            in_progress.dec()


def sniff_audio(head: bytes) -> str | None:
    """The audio container ``head`` (the first bytes of a file) starts, or None.

    Only magic bytes count: a client's file name and Content-Type are never trusted. An
    allowlist, so text, images, archives and executables are all refused without naming them.
    """
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"caff":
        return "caf"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] in (b".snd",):
        return "au"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:4] == b"wvpk":
        return "wavpack"
    if head[:4] == b"MAC ":
        return "ape"
    if _mpeg_frame(head):
        return "mpeg"
    return None


def _mpeg_frame(head: bytes) -> bool:
    """An MPEG audio (MP1/2/3) or ADTS (AAC) frame header at offset 0."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    if head[1] == 0xFE:
        # Also the UTF-16 (LE) byte order mark: text, not audio.
        return False
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    if layer == 0:
        # ADTS: MPEG-2/4 AAC, version bit pattern 1x, layer always 00.
        return head[1] & 0xF6 == 0xF0
    bitrate_index, rate_index = head[2] >> 4, (head[2] >> 2) & 0b11
    return version != 0b01 and bitrate_index != 0xF and rate_index != 0b11


class _MultipartReader:
    """Push-parser callbacks that route the ``file`` part's bytes and keep small fields."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.upload = Upload()
        self.pending: list[bytes] = []
        self.seen_file = False
        self.ended = False
        self._headers: dict[str, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._part: str | None = None  # "file", "field", or None (ignored part)
        self._field_name = ""
        self._field_value = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").lower()
        # Raw bytes: browsers send UTF-8 file names, which parse_options_header round-trips
        # through latin-1 unchanged when given bytes (a str would fail to encode).
        self._headers[name] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD:
            if self.seen_file:
                raise InvalidRequest(f"more than one `{FILE_FIELD}` part; send one file per job")
            self.seen_file = True
            self._part = "file"
            filename = options.get(b"filename")
            self.upload.filename = (
                _unescape(filename.decode("utf-8", "replace")) if filename else None
            )
        elif b"filename" in options:
            self._part = None  # another file part: not ours, its bytes are skipped
        else:
            self._part = "field"
            self._field_name = name
            self._field_value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.upload.size_bytes += end - start
            if self.upload.size_bytes > self.max_file_bytes:
                raise UploadTooLarge(
                    f"upload exceeds the limit of {self.max_file_bytes} bytes "
                    "(EARSHOT_MAX_UPLOAD_BYTES)"
                )
            self.pending.append(data[start:end])
        elif self._part == "field":
            self._field_value += data[start:end]
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise InvalidRequest(
                    f"form field {self._field_name!r} exceeds {MAX_FIELD_BYTES} bytes"
                )

    def on_end(self) -> None:
        self.ended = True

    def on_part_end(self) -> None:
        if self._part == "field":
            self.upload.fields[self._field_name] = self._field_value.decode("utf-8", "replace")
        self._part = None


def _unescape(filename: str) -> str:
    """Undo the escapes browsers apply to multipart file names (WHATWG HTML, form submission)."""
    return filename.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            f"expected a multipart/form-data body with a `{FILE_FIELD}` part, "
            f"got Content-Type {request.headers.get('content-type')!r}"
        )
    return boundary


async def receive(
    request: Request,
    *,
    blobs: BlobStore,
    key: str,
    max_bytes: int,
    slots: UploadSlots | None = None,
) -> Upload:
    """Stream the request's ``file`` part into ``blobs`` under ``key``; return what was received.

    Raises UploadTooLarge, UnsupportedMediaType, InvalidRequest, UploadTimeout (no bytes for
    ``slots.idle_timeout_s``) or starlette's ClientDisconnect; on any of them nothing is stored
    under ``key``. The caller holds one of ``slots`` (``slots.take()``); without ``slots`` the
    body is awaited without a timeout on anyio's default threads.
    """
    boundary = _boundary(request)
    max_body = max_bytes + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body:
        raise UploadTooLarge(
            f"Content-Length {declared} exceeds the limit of {max_bytes} bytes "
            "(EARSHOT_MAX_UPLOAD_BYTES)"
        )

    body = request.stream()
    idle_timeout_s = slots.idle_timeout_s if slots is not None else None
    received = 0

    async def next_chunk() -> bytes:
        nonlocal received
        try:
            with anyio.fail_after(idle_timeout_s):
                chunk = await body.__anext__()
        except StopAsyncIteration:
            return b""
        except TimeoutError:
            # Raised here, on the loop, so that no other TimeoutError (a blob store's socket)
            # is mistaken for an idle client.
            raise UploadTimeout(
                f"no body bytes for {idle_timeout_s:g} s after {received} bytes "
                "(EARSHOT_UPLOAD_IDLE_TIMEOUT_S); nothing was stored, send the file again",
                headers={"Connection": "close"},
            ) from None
        received += len(chunk)
        return chunk

    def pull() -> bytes:
        # Runs in a worker thread (blob stores are blocking); the body is read on the loop.
        return anyio.from_thread.run(next_chunk)

    def store() -> Upload:
        reader = _MultipartReader(max_bytes)
        parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
        digest = hashlib.sha256()
        head = bytearray()
        sniffed = False

        def file_chunks() -> Iterator[bytes]:
            nonlocal sniffed
            total = 0
            while True:
                chunk = pull()
                total += len(chunk)
                if total > max_body:
                    raise UploadTooLarge(
                        f"request body exceeds the limit of {max_bytes} bytes "
                        "(EARSHOT_MAX_UPLOAD_BYTES) plus form overhead"
                    )
                try:
                    if chunk:
                        parser.write(chunk)
                    else:
                        parser.finalize()
                except MultipartParseError as exc:
                    raise InvalidRequest(f"malformed multipart body: {exc}") from None
                if reader.pending:
                    data = b"".join(reader.pending)
                    reader.pending.clear()
                    if not sniffed:
                        head.extend(data[: SNIFF_BYTES - len(head)])
                        if len(head) >= SNIFF_BYTES:
                            _check_head(bytes(head))
                            sniffed = True
                    digest.update(data)
                    yield data
                if not chunk:
                    break
            if not reader.ended:
                # The parser accepts a body cut short; a truncated file must not be analysed.
                raise InvalidRequest("the multipart body ended before its closing boundary")
            if not reader.seen_file:
                raise InvalidRequest(f"the multipart body has no `{FILE_FIELD}` part")
            if reader.upload.size_bytes == 0:
                raise InvalidRequest(f"the `{FILE_FIELD}` part is empty")
            if not sniffed:
                _check_head(bytes(head))  # a file shorter than SNIFF_BYTES

        blobs.put_stream(key, file_chunks())
        reader.upload.sha256 = digest.hexdigest()
        reader.upload.format = sniff_audio(bytes(head)) or ""
        return reader.upload

    try:
        return await anyio.to_thread.run_sync(
            store, limiter=slots.limiter if slots is not None else None
        )
    except UploadTimeout:
        log.info(
            "upload dropped: idle for %g s after %d bytes; nothing stored", idle_timeout_s, received
        )
        raise
    except ClientDisconnect:
        log.info(
            "upload abandoned: the client disconnected after %d bytes; nothing stored", received
        )
        raise


def _check_head(head: bytes) -> None:
    if sniff_audio(head) is None:
        raise UnsupportedMediaType(
            "the uploaded file is not a supported audio format (WAV, AIFF, FLAC, Ogg, MP3, "
            f"AAC, MP4/M4A, CAF, Matroska/WebM, …); it starts with {head[:8].hex(' ')}"
        )
