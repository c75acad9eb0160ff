"""Queue names, task names and job states: the magic strings, in one place."""

from __future__ import annotations

from enum import StrEnum

from analysis.profiles import DEFAULT_PROFILE, PROFILES


class Queue(StrEnum):
    INTERACTIVE = "earshot.interactive"
    BATCH = "earshot.batch"
    # Plots drawn after an analysis: their own pool, so they never delay one.
    RENDER = "earshot.render"
    # Webhook deliveries: waiting on other people's servers, so never beside analyses or plots
    # (a pool of threads, see earshot/service_cmd.py worker()).
    WEBHOOK = "earshot.webhook"


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


QUEUE_FOR_PRIORITY: dict[Priority, Queue] = {
    Priority.INTERACTIVE: Queue.INTERACTIVE,
    Priority.BATCH: Queue.BATCH,
}

ANALYZE_TASK = "earshot.analyze"
RENDER_TASK = "earshot.render"
WEBHOOK_TASK = "earshot.webhook"
# One chunk of a long file (tasks/chunks.py), published on its job's queue.
ANALYZE_CHUNK_TASK = "earshot.analyze_chunk"


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
# The segments of the analysis (Analysis.segments): thousands in a long file, so beside the
# document rather than in it; served as ``result?format=segments`` and in ``audio-analysis``.
SEGMENTS_JSON = "segments.json"
# Plots, written by the render task after the job succeeded; RENDER_ERROR_JSON instead when
# rendering failed for good (the result itself stays available).
WAVEFORM_JSON = "waveform.json"
SPECTROGRAM_PNG = "spectrogram.png"
RENDER_ERROR_JSON = "render_error.json"
# A chunked analysis's working files, removed once the result is stored.
CHUNKS_DIR = "chunks/"
CHUNK_PLAN_JSON = CHUNKS_DIR + "plan.json"


def chunk_key(job_id: str, index: int) -> str:
    """Blob key of the partial result of chunk ``index`` of job ``job_id``."""
    return f"{result_prefix(job_id)}{CHUNKS_DIR}{index}.npz"


# Analysis profiles the service accepts, defined once in analysis.profiles (which imports
# neither numpy nor librosa, so the API may import it).
__all__ = ["DEFAULT_PROFILE", "PROFILES"]
