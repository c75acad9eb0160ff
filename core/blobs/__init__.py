"""Blob storage: one interface (``BlobStore``), a backend per module, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from core.blobs.base import CHUNK_BYTES, BlobStore, check_key
from core.blobs.local import LocalBlobStore
from core.errors import ConfigurationError

__all__ = ["CHUNK_BYTES", "BlobStore", "LocalBlobStore", "check_key", "open_blob_store"]


def open_blob_store(url: str, **s3_options: str | None) -> BlobStore:
    """The blob store for ``url``: ``file:///dir`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme in ("file", ""):
        return LocalBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from core.blobs.s3 import S3BlobStore

        return S3BlobStore.from_url(url, **s3_options)
    raise ConfigurationError(f"unsupported blob URL scheme {parsed.scheme!r} in {url!r}")
