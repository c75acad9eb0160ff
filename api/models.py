"""Response models of the HTTP API: what clients see, with examples for the OpenAPI docs."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.jobs import Job
from core.names import JobStatus, Priority
from core.webhooks import deliveries

API_PREFIX = "/v1/analyses"
MAX_FILENAME_CHARS = 255

_EXAMPLE_ID = "5d0c5f3b9a7e4b0f8a5c2e1d3b4a6f70"


def display_filename(name: str | None) -> str:
    """A client's file name made safe to show: last path segment, no control chars, ≤255 chars.

    The name is display only: it never reaches a blob key or a path on disk.
    """
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    # Category C* covers NUL, other control characters, format characters such as bidi
    # overrides (which can make "evil.exe\u202ewav" look like "evilvaw.exe"), and unassigned.
    cleaned = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C")).strip()
    return cleaned[:MAX_FILENAME_CHARS] or "upload"


class Progress(BaseModel):
    stage: str | None = Field(
        description="The work running now: `starting`, `decode+features`, `features`, "
        "`rhythm`, `key+structure`, `storing`, `done` (chunked: `chunks`, `merging`); null "
        "while queued."
    )
    percent: float = Field(ge=0, le=100, description="Completion, 0 to 100.")


class ErrorInfo(BaseModel):
    code: str = Field(
        description="Stable error code: `invalid_audio` style codes from the analyzer, "
        "`broker_unavailable`, `worker_lost`, …"
    )
    message: str = Field(description="What went wrong, for people.")


class Links(BaseModel):
    self: str = Field(description="This job resource.")
    result: str | None = Field(description="The result document (JSON); null until succeeded.")
    csv: str | None = Field(description="Per-frame features as CSV; null until succeeded.")
    npz: str | None = Field(description="Per-frame features as NumPy .npz; null until succeeded.")
    waveform: str | None = Field(
        None, description="Waveform peaks (audiowaveform JSON); null until succeeded."
    )
    spectrogram: str | None = Field(
        None, description="Log-mel spectrogram PNG with beats; null until succeeded."
    )
    audio: str | None = Field(
        None,
        description="The uploaded file, with HTTP Range support (for a player); null once "
        "the job failed or was canceled (its upload is deleted then).",
    )
    audio_features: str | None = Field(
        None,
        description="The result as Spotify's audio-features object (docs/spotify.md); null "
        "until succeeded.",
    )
    audio_analysis: str | None = Field(
        None,
        description="The result as Spotify's audio-analysis object (docs/spotify.md); null "
        "until succeeded.",
    )


class WebhookDelivery(BaseModel):
    attempt: int = Field(description="1 for the first POST, 2 for the first retry, …")
    at: datetime = Field(description="When the attempt started, to the second.")
    outcome: Literal["delivered", "failed", "refused"] = Field(
        description="`delivered` (a 2xx answer), `failed` (another answer or none: retried) or "
        "`refused` (the URL's host is not a public address: not retried). Network errors are "
        "not shown, so callbacks cannot probe the service's network."
    )
    status_class: str | None = Field(
        description="Class of the receiver's answer (`2xx` … `5xx`); null without one."
    )


class Webhook(BaseModel):
    url: str = Field(description="The callback URL given at submission.")
    deliveries: list[WebhookDelivery] = Field(
        description="Attempts to POST the job's end to the URL, oldest first (at most 20)."
    )


class Analysis(BaseModel):
    """One analysis job: where it is, what it was given, and where its result lives."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "status": "succeeded",
                    "progress": {"stage": "done", "percent": 100.0},
                    "filename": "take 3.flac",
                    "size_bytes": 1843200,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "profile": "standard",
                    "priority": "interactive",
                    "cached": False,
                    "attempts": 1,
                    "created_at": "2026-11-24T11:20:00Z",
                    "started_at": "2026-11-24T11:20:01Z",
                    "finished_at": "2026-11-24T11:20:04Z",
                    "error": None,
                    "callback_url": None,
                    "links": {
                        "self": f"{API_PREFIX}/{_EXAMPLE_ID}",
                        "result": f"{API_PREFIX}/{_EXAMPLE_ID}/result",
                        "csv": f"{API_PREFIX}/{_EXAMPLE_ID}/result?format=csv",
                        "npz": f"{API_PREFIX}/{_EXAMPLE_ID}/result?format=npz",
                    },
                }
            ]
        }
    )

    id: str = Field(description="Job id (32 hex characters).")
    status: JobStatus = Field(description="`queued`, `running`, `succeeded`, `failed`, `canceled`.")
    progress: Progress
    filename: str = Field(
        description="The uploaded file's name, for display only (path and control characters "
        "removed, at most 255 characters)."
    )
    size_bytes: int = Field(description="Size of the uploaded file in bytes.")
    sha256: str = Field(description="SHA-256 of the uploaded bytes, hex.")
    profile: str = Field(description="Analysis profile.")
    priority: Priority = Field(description="Queue the job runs on: `interactive` or `batch`.")
    cached: bool = Field(
        description="True when the result was reused from an earlier job of the same API key "
        "with the same bytes, profile and analyzer version (the job never queued)."
    )
    attempts: int = Field(description="Deliveries to a worker so far.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorInfo | None = Field(description="Why the job failed; null unless `failed`.")
    callback_url: str | None = Field(description="URL given at submission for notifications.")
    webhook: Webhook | None = Field(
        None, description="The notification of the job's end to `callback_url`; null without one."
    )
    links: Links

    @classmethod
    def from_job(cls, job: Job) -> Analysis:
        own = f"{API_PREFIX}/{job.id}"
        done = job.status is JobStatus.SUCCEEDED
        return cls(
            id=job.id,
            status=job.status,
            progress=Progress(stage=job.stage, percent=job.percent),
            filename=job.filename,
            size_bytes=job.size_bytes,
            sha256=job.sha256,
            profile=job.profile,
            priority=Priority(job.priority),
            cached=job.cached,
            attempts=job.attempts,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=(
                ErrorInfo(code=job.error_code, message=job.error_message or "")
                if job.status is JobStatus.FAILED and job.error_code
                else None
            ),
            callback_url=job.callback_url,
            webhook=(
                Webhook(url=job.callback_url, deliveries=deliveries(job))
                if job.callback_url
                else None
            ),
            links=Links(
                self=own,
                result=f"{own}/result" if done else None,
                csv=f"{own}/result?format=csv" if done else None,
                npz=f"{own}/result?format=npz" if done else None,
                waveform=f"{own}/waveform.json" if done else None,
                spectrogram=f"{own}/spectrogram.png" if done else None,
                audio=(
                    None if job.status in (JobStatus.FAILED, JobStatus.CANCELED) else f"{own}/audio"
                ),
                audio_features=f"{own}/audio-features" if done else None,
                audio_analysis=f"{own}/audio-analysis" if done else None,
            ),
        )


class AnalysisPage(BaseModel):
    """A page of jobs, newest first."""

    items: list[Analysis]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str = Field(description="Always `ok` when the process answers.")


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "checks": {"broker": True, "database": True, "blobs": True},
                    "workers": {
                        "earshot.interactive": True,
                        "earshot.batch": True,
                        "earshot.render": True,
                        "earshot.webhook": True,
                    },
                    "analyzer_version": "1.2.0",
                }
            ]
        }
    )

    status: str = Field(
        description="`ready` when every dependency answers and every queue has a warm worker."
    )
    checks: dict[str, bool] = Field(description="Each dependency and whether it answered.")
    workers: dict[str, bool] = Field(
        description="Each queue and whether a worker that finished its warm-up consumes it."
    )
    analyzer_version: str = Field(description="Version of the analysis code results come from.")
