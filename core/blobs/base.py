"""The blob store interface: where uploads, result documents and frame arrays live.

One small interface, one real implementation per backend beside it: a local directory
(``core.blobs.local``, the embedded default) and S3-compatible object storage
(``core.blobs.s3``, scaled out). Keys are ``/``-separated and made by the service only
(``uploads/<job id>``, ``results/<job id>/result.json``): a client's file name never reaches a key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024


class BlobStore(ABC):
    """Where bytes live. Writes are atomic: a reader sees a whole blob or none."""

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenated chunks under ``key``; return the number of bytes written."""

    def put_bytes(self, key: str, data: bytes) -> int:
        return self.put_stream(key, [data])

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the blob; raises BlobNotFound."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def iter_range(
        self, key: str, start: int, length: int, chunk_size: int = CHUNK_BYTES
    ) -> Iterator[bytes]:
        """The ``length`` bytes of the blob from offset ``start`` (fewer if it ends first).

        For HTTP Range requests. The default seeks in ``open``'s stream (a local file); a
        backend whose streams cannot seek reads the range from the store instead. Raises
        BlobNotFound on the first ``next``.
        """
        with self.open(key) as f:
            f.seek(start)
            yield from read_upto(f, length, chunk_size)

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; raises BlobNotFound."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob if present (no error when missing)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob whose key starts with ``prefix``."""

    @contextlib.contextmanager
    def local_path(self, key: str, *, suffix: str = "") -> Iterator[Path]:
        """A path on local disk holding the blob, for decoders that need a file.

        Backends without local files copy to a temporary file removed on exit.
        """
        fd, name = tempfile.mkstemp(prefix="earshot-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as out, self.open(key) as src:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def read_upto(f: BinaryIO, length: int, chunk_size: int) -> Iterator[bytes]:
    """Chunks of ``f`` until ``length`` bytes were read or it ended."""
    remaining = length
    while remaining > 0:
        chunk = f.read(min(chunk_size, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def check_key(key: str) -> str:
    """``key`` if it is a key the service may use: relative, ``/``-separated, no ``.``/``..``."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key
