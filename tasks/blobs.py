"""Blob storage for uploads, result documents and frame arrays.

One small interface, one real implementation per backend: a local directory (embedded
default) and S3-compatible object storage (scaled out). Keys are ``/``-separated and made
by the service only (``uploads/<job id>``, ``results/<job id>/summary.json``): a client's
file name never reaches a key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from tasks.errors import BlobNotFound, ConfigurationError

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


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class LocalBlobStore(BlobStore):
    """Blobs as files under one directory; writes go to a temporary file, then rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        written = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return written

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key!r} not found") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key!r} not found") from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> None:
        prefix = prefix.rstrip("/")
        target = self._path(prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()

    @contextlib.contextmanager
    def local_path(self, key: str, *, suffix: str = "") -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"blob {key!r} not found")
        yield path


def open_blob_store(url: str, **s3_options: str | None) -> BlobStore:
    """The blob store for ``url``: ``file:///dir`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme in ("file", ""):
        return LocalBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from tasks.s3 import S3BlobStore

        return S3BlobStore.from_url(url, **s3_options)
    raise ConfigurationError(f"unsupported blob URL scheme {parsed.scheme!r} in {url!r}")
