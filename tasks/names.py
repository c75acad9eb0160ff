"""Queue names, task names and job states: the magic strings, in one place."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    INTERACTIVE = "earshot.interactive"
    BATCH = "earshot.batch"


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


QUEUE_FOR_PRIORITY: dict[Priority, Queue] = {
    Priority.INTERACTIVE: Queue.INTERACTIVE,
    Priority.BATCH: Queue.BATCH,
}

ANALYZE_TASK = "earshot.analyze"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
