"""Fixtures of the task tests: a real runtime on SQLite and a local blob directory."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.jobs import Job, new_job_id
from core.names import Priority, upload_key
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from tasks.app import TASK_MODULES

# Register every task by name, as a worker does (tasks.app.configure_worker): a test that applies
# one task may reach another through the queue (an analysis plans chunks, a chunk ends the job).
for module in TASK_MODULES:
    importlib.import_module(module)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = build_runtime(Settings(data_dir=tmp_path / "var"))
    yield rt
    rt.close()


def click_track_wav(path: Path, *, bpm: float = 120.0, seconds: float = 6.0) -> Path:
    """A click every beat over a quiet A4 sine: audio with a known tempo."""
    sr = 22050
    t = np.arange(int(seconds * sr)) / sr
    y = 0.1 * np.sin(2 * np.pi * 440.0 * t)
    step = round(sr * 60.0 / bpm)
    for start in range(0, y.size, step):
        y[start : start + 200] += 0.8 * np.hanning(200)[: y[start : start + 200].size]
    sf.write(path, np.clip(y, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    return path


def submit(
    runtime: Runtime,
    data: bytes,
    *,
    profile: str = "standard",
    priority: Priority = Priority.INTERACTIVE,
) -> Job:
    """Store ``data`` as an upload and create its queued job, as the API does."""
    job_id = new_job_id()
    runtime.blobs.put_bytes(upload_key(job_id), data)
    job, _ = runtime.jobs.create(
        job_id=job_id,
        upload_key=upload_key(job_id),
        filename="clip.wav",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        profile=profile,
        priority=priority.value,
    )
    return job


@pytest.fixture
def wav_bytes(tmp_path: Path) -> bytes:
    return click_track_wav(tmp_path / "clicks.wav").read_bytes()
