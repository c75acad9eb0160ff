"""Re-queue jobs whose message was lost, so no job stays "queued" or "running" forever.

RabbitMQ keeps an unacknowledged message until its consumer acks it, so a crash there costs a
redelivery, not a job. kombu's ``filesystem://`` transport does not: a worker takes a message
file out of the folder when it reserves it, and a worker that dies (kill -9, power cut) takes
the message with it. The job row still says queued or running; this module finds such jobs and
publishes them again. ``mark_running`` counts every delivery, so a file that kills the worker
each time ends as ``worker_lost`` instead of looping.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from core.broker import broker_folders
from core.errors import BrokerUnavailable
from core.jobs import Job
from core.names import JobStatus
from core.runtime import Runtime

log = logging.getLogger(__name__)

# Extra slack beyond the hard time limit before a running job without news is presumed dead.
GRACE_S = 60.0

# Processed message files are kept this long (for debugging a stuck queue), then pruned.
PROCESSED_TTL_S = 3600.0


def job_ids_in_broker_folder(runtime: Runtime) -> set[str]:
    """Job ids of the messages waiting in the ``filesystem://`` broker folder."""
    folder = Path(broker_folders(runtime.settings)["data_folder_in"])
    ids: set[str] = set()
    for path in folder.glob("*.msg"):
        try:
            payload = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # taken by a worker while we looked, or half written: not ours to judge
        task_id = (payload.get("headers") or {}).get("id")
        if isinstance(task_id, str):
            ids.add(task_id)
    return ids


def prune_processed(runtime: Runtime, *, older_than_s: float = PROCESSED_TTL_S) -> int:
    """Delete processed message files older than ``older_than_s``; return how many."""
    folder = Path(broker_folders(runtime.settings)["processed_folder"])
    cutoff = time.time() - older_than_s
    removed = 0
    for path in folder.glob("*.msg"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def lost_jobs(runtime: Runtime, *, workers_alive: bool) -> list[Job]:
    """Active jobs whose message no consumer holds.

    With ``workers_alive=False`` (``earshot dev`` before it starts its workers) every running
    job is orphaned, and every queued job whose message file is gone. With live workers only
    jobs silent for longer than the hard time limit are: a live worker updates its job's row
    at least that often, or its process is killed.
    """
    settings = runtime.settings
    if workers_alive:
        candidates = runtime.jobs.stale_active(
            older_than=timedelta(seconds=settings.task_time_limit_s + GRACE_S)
        )
    else:
        candidates = runtime.jobs.stale_active(older_than=timedelta(0))
    if settings.embedded:
        waiting = job_ids_in_broker_folder(runtime)
        return [job for job in candidates if job.id not in waiting]
    # A queued job on RabbitMQ is only waiting its turn (the broker holds its message); a long
    # backlog must not be multiplied by re-publishing it.
    return [job for job in candidates if job.status is JobStatus.RUNNING]


def reconcile(runtime: Runtime, *, workers_alive: bool) -> list[str]:
    """Re-publish lost jobs; return their ids. Broker outages are left for the next round."""
    requeued: list[str] = []
    for job in lost_jobs(runtime, workers_alive=workers_alive):
        if not runtime.jobs.requeue(job.id):
            continue  # finished meanwhile
        try:
            runtime.publish(job)
        except BrokerUnavailable as exc:
            log.warning("reconcile: job %s stays queued, broker unavailable: %s", job.id, exc)
            continue
        log.info("reconcile: re-queued job %s (was %s)", job.id, job.status.value)
        requeued.append(job.id)
    if runtime.settings.embedded:
        prune_processed(runtime)
    return requeued


def reconcile_forever(runtime: Runtime, *, interval_s: float, stop: threading.Event) -> None:
    """Run :func:`reconcile` (live-worker mode) every ``interval_s`` until ``stop`` is set.

    Errors are logged, never fatal: the next round retries.
    """
    while not stop.wait(interval_s):
        try:
            reconcile(runtime, workers_alive=True)
        except Exception:
            log.exception("reconcile round failed (pid %d)", os.getpid())
