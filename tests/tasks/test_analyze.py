"""The analyze task run in-process against a real SQLite job store and a local blob folder."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis import ANALYZER_VERSION
from core.blobs import LocalBlobStore
from core.errors import TransientStoreError
from core.jobs import JobStore
from core.names import (
    ANALYZE_TASK,
    FRAMES_CSV,
    FRAMES_NPZ,
    RESULT_JSON,
    SEGMENTS_JSON,
    JobStatus,
)
from core.runtime import Runtime
from tasks.outcomes import WORKER_LOST
from tests.tasks.conftest import submit


def run_task(runtime: Runtime, job_id: str) -> Any:
    """Deliver the task once, in this process, the way a worker would."""
    return runtime.celery.tasks[ANALYZE_TASK].apply(args=[job_id]).get()


def test_analysis_succeeds_and_stores_whole_result(runtime: Runtime, wav_bytes: bytes) -> None:
    job = submit(runtime, wav_bytes)

    assert run_task(runtime, job.id) == JobStatus.SUCCEEDED

    done = runtime.jobs.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.percent == 100.0
    assert done.attempts == 1
    assert done.analyzer_version == ANALYZER_VERSION
    assert done.result_prefix is not None
    document = json.loads(runtime.blobs.get_bytes(done.result_prefix + RESULT_JSON))
    # The click track is at 120 BPM; the document is the analysis of this very file.
    assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3)
    header = runtime.blobs.get_bytes(done.result_prefix + FRAMES_CSV).split(b"\n", 1)[0]
    assert b"time_s" in header or b"time" in header
    assert runtime.blobs.get_bytes(done.result_prefix + FRAMES_NPZ).startswith(b"PK")
    # The segments beside the document: contiguous from 0 to the end of the file.
    segments = json.loads(runtime.blobs.get_bytes(done.result_prefix + SEGMENTS_JSON))
    assert segments[0]["start_s"] == 0.0
    for a, b in itertools.pairwise(segments):
        assert a["start_s"] + a["duration_s"] == pytest.approx(b["start_s"], abs=1e-4)
    end = segments[-1]["start_s"] + segments[-1]["duration_s"]
    assert end == pytest.approx(document["audio"]["duration_s"], abs=0.05)
    # Kept on success: re-running a job needs no re-upload.
    assert runtime.blobs.exists(job.upload_key or "")


def test_invalid_audio_fails_with_its_code_and_is_not_retried(runtime: Runtime) -> None:
    job = submit(runtime, b"this is a shopping list, not audio\n" * 50)

    assert run_task(runtime, job.id) == JobStatus.FAILED

    failed = runtime.jobs.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "unreadable_audio"
    assert failed.error_message
    assert failed.attempts == 1
    assert not runtime.blobs.exists(failed.result_prefix or f"results/{job.id}/{RESULT_JSON}")


class CancelOnFirstProgress(JobStore):
    """A real job store whose user cancels the job just as the first progress is written."""

    def update_progress(self, job_id: str, *, stage: str, percent: float) -> bool:
        self.cancel(job_id)
        return super().update_progress(job_id, stage=stage, percent=percent)


def test_cancel_during_progress_stops_the_analysis(
    runtime: Runtime, wav_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Progress at every stage: this short file is analysed within the usual interval.
    monkeypatch.setattr("tasks.steps.PROGRESS_INTERVAL_S", 0.0)
    job = submit(runtime, wav_bytes)
    runtime.jobs = CancelOnFirstProgress(runtime.jobs.url, engine=runtime.jobs.engine)

    assert run_task(runtime, job.id) == JobStatus.CANCELED

    canceled = runtime.jobs.get(job.id)
    assert canceled.status is JobStatus.CANCELED
    assert canceled.percent < 100.0
    assert not runtime.blobs.exists(f"results/{job.id}/{RESULT_JSON}")
    assert not runtime.blobs.exists(f"results/{job.id}/{FRAMES_CSV}")
    assert not runtime.blobs.exists(job.upload_key or "")


def test_redelivery_after_success_is_a_no_op(runtime: Runtime, wav_bytes: bytes) -> None:
    job = submit(runtime, wav_bytes)
    run_task(runtime, job.id)
    first = runtime.jobs.get(job.id)
    result_key = f"{first.result_prefix}{RESULT_JSON}"
    result_path = runtime.blobs.root / result_key  # type: ignore[attr-defined]
    stamp = result_path.stat().st_mtime_ns

    assert run_task(runtime, job.id) == JobStatus.SUCCEEDED

    again = runtime.jobs.get(job.id)
    assert again.attempts == 1
    assert again.finished_at == first.finished_at
    assert result_path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in result_path.parent.iterdir()) == sorted(
        [FRAMES_CSV, FRAMES_NPZ, RESULT_JSON, SEGMENTS_JSON]
    )


def test_attempts_exceeded_fails_with_worker_lost(runtime: Runtime, wav_bytes: bytes) -> None:
    job = submit(runtime, wav_bytes)
    # Each delivery that killed its worker claimed the job first and never finished it.
    for _ in range(runtime.settings.task_max_attempts):
        assert runtime.jobs.mark_running(job.id)

    assert run_task(runtime, job.id) == JobStatus.FAILED

    lost = runtime.jobs.get(job.id)
    assert lost.error_code == WORKER_LOST
    assert str(runtime.settings.task_max_attempts) in (lost.error_message or "")
    assert not runtime.blobs.exists(f"results/{job.id}/{RESULT_JSON}")


class RequeueOnFirstProgress(JobStore):
    """A real job store in which a restarted ``earshot dev`` re-queues the job (its reconciler
    found it "running" with no live worker) while this delivery, an orphan, still analyses it."""

    requeued = False

    def update_progress(self, job_id: str, *, stage: str, percent: float) -> bool:
        if not self.requeued:
            self.requeued = self.requeue(job_id)
        return super().update_progress(job_id, stage=stage, percent=percent)


def test_requeue_under_a_running_delivery_keeps_the_upload(
    runtime: Runtime, wav_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Progress at every stage: this short file is analysed within the usual interval.
    monkeypatch.setattr("tasks.steps.PROGRESS_INTERVAL_S", 0.0)
    job = submit(runtime, wav_bytes)
    root = runtime.blobs.root  # type: ignore[attr-defined]
    upload = root / (job.upload_key or "")
    plain = runtime.jobs
    runtime.jobs = RequeueOnFirstProgress(plain.url, engine=plain.engine)

    # The orphan stops (its progress write fails) but the job is wanted: queued, not canceled.
    assert run_task(runtime, job.id) == JobStatus.QUEUED
    assert upload.read_bytes() == wav_bytes

    # The re-published message then runs it to the end on the upload that was kept.
    runtime.jobs = plain
    assert run_task(runtime, job.id) == JobStatus.SUCCEEDED
    done = runtime.jobs.get(job.id)
    assert done.error_code is None
    document = json.loads((root / (done.result_prefix or "") / RESULT_JSON).read_text())
    assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3)


class OtherDeliverySucceedsFirst(JobStore):
    """A real job store in which a second delivery of the job stores the same result and
    marks it succeeded just before this delivery does."""

    def mark_succeeded(self, job_id: str, **values: Any) -> bool:
        assert super().mark_succeeded(job_id, **values)  # the other delivery wins
        return super().mark_succeeded(job_id, **values)  # ours finds the job finished


def test_losing_a_race_to_succeed_keeps_the_winners_result(
    runtime: Runtime, wav_bytes: bytes
) -> None:
    job = submit(runtime, wav_bytes)
    runtime.jobs = OtherDeliverySucceedsFirst(runtime.jobs.url, engine=runtime.jobs.engine)

    assert run_task(runtime, job.id) == JobStatus.SUCCEEDED

    root = runtime.blobs.root  # type: ignore[attr-defined]
    document = json.loads((root / "results" / job.id / RESULT_JSON).read_text())
    assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3)
    assert (root / "results" / job.id / FRAMES_NPZ).stat().st_size > 0
    assert (root / (job.upload_key or "")).read_bytes() == wav_bytes


class FlakyBlobStore(LocalBlobStore):
    """A real local store whose first write of a result fails as an object store outage would."""

    failures = 1

    def put_stream(self, key: str, chunks: Any) -> int:
        if key.startswith("results/") and self.failures:
            self.failures -= 1
            raise TransientStoreError(f"simulated outage writing {key}")
        return super().put_stream(key, chunks)


def test_transient_store_error_is_retried(runtime: Runtime, wav_bytes: bytes) -> None:
    runtime.blobs = FlakyBlobStore(runtime.blobs.root)  # type: ignore[attr-defined]
    job = submit(runtime, wav_bytes)

    runtime.celery.tasks[ANALYZE_TASK].apply(args=[job.id])

    done = runtime.jobs.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.attempts == 2
    assert runtime.blobs.exists(f"results/{job.id}/{RESULT_JSON}")


def test_unknown_job_is_dropped(runtime: Runtime) -> None:
    assert run_task(runtime, "0" * 32) == "missing"


def test_the_runtime_knows_the_analyzer_version_without_the_analysis_stack() -> None:
    code = (
        "import sys, core.runtime as r; from analysis.version import ANALYZER_VERSION as v;"
        "print(r.Runtime.__dataclass_fields__['analyzer_version'].default == v,"
        " sorted(m for m in ('librosa', 'numba', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1) == ["True", "[]\n"]
    assert ANALYZER_VERSION.count(".") == 2  # semantic version, as docs/result.md says


@pytest.mark.parametrize("name", ["click120_cmajor.ogg", "click120_cmajor.flac"])
def test_the_task_opens_the_upload_once_and_stores_what_analyze_file_finds(
    runtime: Runtime, samples_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The header that plans the job and the decoder of the analysis are one opened file (the
    chunk plan used to open it a first time: ~0.5 ms of a 5-s clip's job); the stored document
    is the one ``analyze_file`` makes of the file opened on its own."""
    import av
    import soundfile as sf

    from analysis import analyze_file

    data = (samples_dir / name).read_bytes()
    expected = analyze_file(samples_dir / name).document
    opens: list[str] = []
    real_soundfile, real_av_open = sf.SoundFile, av.open

    def counting_soundfile(*args: Any, **kwargs: Any) -> Any:
        opens.append("libsndfile")
        return real_soundfile(*args, **kwargs)

    def counting_av_open(*args: Any, **kwargs: Any) -> Any:
        opens.append("ffmpeg")
        return real_av_open(*args, **kwargs)

    monkeypatch.setattr(sf, "SoundFile", counting_soundfile)
    monkeypatch.setattr(av, "open", counting_av_open)
    job = submit(runtime, data)
    assert run_task(runtime, job.id) == JobStatus.SUCCEEDED
    # Ogg Vorbis: libsndfile reads the header, FFmpeg decodes; FLAC: libsndfile does both.
    assert opens == (["libsndfile", "ffmpeg"] if name.endswith(".ogg") else ["libsndfile"])
    done = runtime.jobs.get(job.id)
    stored = json.loads(runtime.blobs.get_bytes(f"{done.result_prefix}{RESULT_JSON}"))
    assert stored == json.loads(json.dumps(expected))
