"""Local files of the client: content hashes, Idempotency-Keys and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# Part of every Idempotency-Key: a key names "this content, analysed this way", so a future
# client that asks for a different kind of analysis must not replay today's jobs.
IDEMPOTENCY_SCOPE = "earshot.analyze"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def idempotency_key(sha256: str, *, profile: str, attempt: int = 0) -> str:
    """The Idempotency-Key of an upload: same content + profile + scope, same key.

    ``attempt`` is 0 for the first submission; ``--retry-failed`` counts it up so that a retry
    creates a new job instead of replaying the failed one, while a crash during the retry
    still replays the retry.
    """
    parts = [sha256, profile, IDEMPOTENCY_SCOPE]
    if attempt:
        parts.append(f"retry-{attempt}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` via a temporary sibling and a rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with open(tmp, mode, **text) as fh:  # type: ignore[call-overload]
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
