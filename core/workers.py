"""Which queues have a warm worker: what ``/readyz`` reports and what "workers starting" means.

A worker pool consumes only once its warm-up (imports, numba's JIT) is done, so "a queue has a
consumer" is "a queue has a warm worker". RabbitMQ counts a queue's consumers itself (a passive
``queue.declare`` answers the count). The embedded ``filesystem://`` broker has no consumers to
count: each pool, once it consumes, writes a presence file naming its queues and pid into the
broker folder and removes it when it stops; a file whose process is gone (a pool killed by
SIGKILL) counts for nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from core.names import Queue
from core.settings import Settings

log = logging.getLogger(__name__)

# Under the broker folder: one ``<worker hostname>.json`` per pool that consumes.
PRESENCE_DIR = "workers"


def presence_dir(settings: Settings) -> Path:
    return settings.broker_dir.resolve() / PRESENCE_DIR


def announce(settings: Settings, hostname: str, queues: list[str]) -> Path | None:
    """Record that this process now consumes ``queues`` (embedded broker only); its path.

    Written whole or not at all (a rename), so a reader never sees half a record.
    """
    if not settings.embedded:
        return None
    folder = presence_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hostname.replace('/', '_')}.json"
    record = {"pid": os.getpid(), "host": socket.gethostname(), "queues": queues}
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(record))
    partial.replace(path)
    return path


def withdraw(path: Path | None) -> None:
    """Remove a presence record written by `announce` (the pool stops consuming)."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # another host's process cannot be checked from here; trust the record
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def embedded_warm_queues(settings: Settings) -> set[str]:
    """Queues named by the presence record of a live pool."""
    warm: set[str] = set()
    folder = presence_dir(settings)
    if not folder.is_dir():
        return warm
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed while we looked
        if isinstance(record, dict) and _alive(record):
            warm.update(str(q) for q in record.get("queues", []))
    return warm


def amqp_warm_queues(celery: Any, timeout_s: float) -> set[str]:
    """Queues RabbitMQ counts at least one consumer on (a missing queue counts none)."""
    warm: set[str] = set()
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
        for queue in Queue:
            channel = conn.channel()
            try:
                _, _, consumers = channel.queue_declare(queue=queue.value, passive=True)
                if consumers:
                    warm.add(queue.value)
            except Exception as exc:  # 404 NOT_FOUND closes the channel: no worker declared it
                log.debug("queue %s has no consumer count: %s", queue.value, exc)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return warm


def warm_queues(settings: Settings, celery: Any, timeout_s: float) -> dict[str, bool]:
    """Each queue, and whether a warm worker consumes it now."""
    if settings.embedded:
        warm = embedded_warm_queues(settings)
    else:
        warm = amqp_warm_queues(celery, timeout_s)
    return {q.value: q.value in warm for q in Queue}
