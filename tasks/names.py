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


def upload_key(job_id: str) -> str:
    """Blob key of a job's uploaded audio (the client's file name never reaches a key)."""
    return f"uploads/{job_id}"


def result_prefix(job_id: str) -> str:
    """Blob key prefix under which a job's result files are stored."""
    return f"results/{job_id}/"


# Files under a result prefix. RESULT_JSON is written last: its presence marks a whole result.
RESULT_JSON = "result.json"
FRAMES_CSV = "frames.csv"
FRAMES_NPZ = "frames.npz"


# Analysis profiles the service accepts: the names of analysis.PROFILES, repeated here because
# the API must not import the analysis package (librosa); tests/api checks the two agree.
PROFILES: tuple[str, ...] = ("standard", "fast")
DEFAULT_PROFILE = "standard"
