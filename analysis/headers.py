"""What an audio header says when it cannot be taken at its word.

A writer that streams to a pipe cannot go back to fill in sizes: a streamed WAV or RF64 says
0 bytes of data, and an MP3 without a Xing/Info or VBRI frame carries no length at all. These
helpers read the few header bytes that tell such files apart, and let libsndfile read a
streamed WAV as if its size had been written (the upload itself is never modified).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

# Where an MP3's first frame keeps its Xing/Info or VBRI tag: after the 4-byte frame header
# and at most 32 bytes of side information.
MPEG_TAG_SPAN = 4 + 32 + 4


class PatchedFile(io.FileIO):
    """A file opened for reading as if ``data`` were written at offset ``at``.

    The upload itself is never modified; libsndfile reads through ``readinto``.
    """

    def __init__(self, path: Path, *, at: int, data: bytes) -> None:
        super().__init__(path, "rb")
        self._at, self._data = at, data

    def readinto(self, buffer: Any) -> int:
        start = self.tell()
        n = super().readinto(buffer) or 0
        lo, hi = max(start, self._at), min(start + n, self._at + len(self._data))
        if lo < hi:
            view = memoryview(buffer).cast("B")
            view[lo - start : hi - start] = self._data[lo - self._at : hi - self._at]
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self.fileno()).st_size - self.tell())
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(buffer)])


def streamed_wav_size(path: Path) -> tuple[int, bytes] | None:
    """Where a streamed WAV/RF64 leaves its data size at 0, and the size the file implies.

    A writer that cannot seek back (``ffmpeg -f wav pipe:1 -rf64 always``, many recorders)
    leaves a RIFF data size of 0, or RF64's ds64 data size of 0, and writes the samples to
    the end of the file. Returns ``(offset, bytes)`` to read in place of the zero, or None
    when the file is not such a WAV or has no bytes after its data chunk header.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:] != b"WAVE":
            return None
        ds64_at: int | None = None
        pos = 12
        # Bounded: a streamed header holds a handful of chunks before its data.
        for _ in range(64):
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"ds64" and head[:4] != b"RIFF":
                ds64 = f.read(16)
                if len(ds64) < 16 or struct.unpack("<Q", ds64[8:])[0] != 0:
                    return None
                ds64_at = pos + 16
            elif name == b"data":
                payload = size - (pos + 8)
                if payload <= 0:
                    return None
                if head[:4] == b"RIFF":
                    return (
                        (pos + 4, struct.pack("<I", min(payload, 0xFFFFFFFF)))
                        if length == 0
                        else None
                    )
                return None if ds64_at is None else (ds64_at, struct.pack("<Q", payload))
            pos += 8 + length + (length & 1)
    return None


def mpeg_declares_length(path: Path) -> bool:
    """Whether an MP3's first frame is a Xing/Info header with a frame count, or a VBRI header.

    Without one, libsndfile's length is an estimate from the first frame's bit rate: FFmpeg
    writes no Xing frame to a pipe, and a VBR stream that opens quietly is then "estimated" at
    five times its length.
    """
    with path.open("rb") as f:
        offset = 0
        # ID3v2 tags (cover art can make them megabytes) come before the first frame.
        for _ in range(4):
            f.seek(offset)
            tag = f.read(10)
            if len(tag) < 10 or tag[:3] != b"ID3":
                break
            # A "syncsafe" size: 7 bits in each of 4 bytes; a footer adds 10 more bytes.
            size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(tag[6:10]))
            offset += 10 + size + (10 if tag[5] & 0x10 else 0)
        f.seek(offset)
        head = f.read(4096)
    sync = next(
        (i for i in range(len(head) - 1) if head[i] == 0xFF and head[i + 1] & 0xE0 == 0xE0), None
    )
    if sync is None:
        return False
    frame = head[sync : sync + MPEG_TAG_SPAN + 12]
    for name in (b"Xing", b"Info"):
        at = frame.find(name, 4, MPEG_TAG_SPAN)
        if at >= 0:
            # Flag bit 0: a frame count follows the flags.
            flags = int.from_bytes(frame[at + 4 : at + 8], "big")
            return bool(flags & 1) and int.from_bytes(frame[at + 8 : at + 12], "big") > 0
    return frame.find(b"VBRI", 4, MPEG_TAG_SPAN) == 36
