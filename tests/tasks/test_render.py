"""The render task in-process on a real SQLite job store and a local blob folder."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import tasks.analyze  # registers the tasks
import tasks.render  # noqa: F401
from core.blobs import LocalBlobStore
from core.errors import TransientStoreError
from core.followups import request_render
from core.jobs import Job, JobRow
from core.names import (
    ANALYZE_TASK,
    RENDER_ERROR_JSON,
    RENDER_TASK,
    RESULT_JSON,
    SPECTROGRAM_PNG,
    WAVEFORM_JSON,
    WEBHOOK_TASK,
    Priority,
    result_prefix,
)
from core.runtime import Runtime
from tasks.render import MAX_RETRIES
from tests.tasks.conftest import submit

SECONDS = 6.0  # the click_track_wav fixture's length


def succeeded(runtime: Runtime, data: bytes, *, beats_s: list[float] | None = None) -> Job:
    """A job whose analysis succeeded: its upload and a result.json, as the analyze task leaves."""
    job = submit(runtime, data)
    prefix = result_prefix(job.id)
    document = {"summary": {"beats_s": beats_s or [0.0, 0.5, 1.0, 1.5]}}
    runtime.blobs.put_bytes(prefix + RESULT_JSON, json.dumps(document).encode())
    assert runtime.jobs.mark_running(job.id)
    assert runtime.jobs.mark_succeeded(job.id, result_prefix=prefix, analyzer_version="test")
    return runtime.jobs.get(job.id)


def run_task(runtime: Runtime, job_id: str) -> Any:
    return runtime.celery.tasks[RENDER_TASK].apply(args=[job_id]).get()


def test_render_stores_peaks_and_spectrogram(runtime: Runtime, wav_bytes: bytes) -> None:
    job = succeeded(runtime, wav_bytes)

    assert run_task(runtime, job.id) == "rendered"

    prefix = job.result_prefix or ""
    peaks = json.loads(runtime.blobs.get_bytes(prefix + WAVEFORM_JSON))
    assert peaks["version"] == 2
    assert peaks["channels"] == 1
    assert peaks["bits"] == 8
    assert peaks["length"] == len(peaks["data"]) // 2
    covered_s = peaks["length"] * peaks["samples_per_pixel"] / peaks["sample_rate"]
    assert covered_s == pytest.approx(SECONDS, abs=0.05)
    # The click track peaks near 0.8 + 0.1 of full scale on its clicks.
    assert max(peaks["data"]) == pytest.approx(0.9 * 128, abs=6)
    image = Image.open(io.BytesIO(runtime.blobs.get_bytes(prefix + SPECTROGRAM_PNG)))
    assert image.format == "PNG"
    assert image.size == (1200, 400)
    assert not runtime.blobs.exists(prefix + RENDER_ERROR_JSON)
    # The result is untouched.
    assert json.loads(runtime.blobs.get_bytes(prefix + RESULT_JSON))["summary"]["beats_s"]


def test_unreadable_audio_stores_the_reason_and_keeps_the_result(runtime: Runtime) -> None:
    job = succeeded(runtime, b"a text file that somehow got a result\n" * 40)

    assert run_task(runtime, job.id) == "failed"

    prefix = job.result_prefix or ""
    error = json.loads(runtime.blobs.get_bytes(prefix + RENDER_ERROR_JSON))
    assert error["code"] == "unreadable_audio"
    assert error["message"]
    assert runtime.blobs.exists(prefix + RESULT_JSON)
    assert not runtime.blobs.exists(prefix + SPECTROGRAM_PNG)


def test_a_missing_upload_is_reported(runtime: Runtime, wav_bytes: bytes) -> None:
    job = succeeded(runtime, wav_bytes)
    runtime.blobs.delete(job.upload_key or "")

    assert run_task(runtime, job.id) == "failed"

    error = json.loads(runtime.blobs.get_bytes((job.result_prefix or "") + RENDER_ERROR_JSON))
    assert error["code"] == "upload_missing"


def test_only_succeeded_jobs_are_rendered(runtime: Runtime, wav_bytes: bytes) -> None:
    queued = submit(runtime, wav_bytes)
    assert run_task(runtime, queued.id) == "skipped"
    assert run_task(runtime, "f" * 32) == "skipped"
    assert not runtime.blobs.exists(result_prefix(queued.id) + SPECTROGRAM_PNG)


class FlakyBlobStore(LocalBlobStore):
    """A real local store whose first ``failures`` writes of a spectrogram fail transiently."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        if key.endswith(SPECTROGRAM_PNG) and self.failures > 0:
            self.failures -= 1
            raise TransientStoreError("object store briefly unreachable")
        return super().put_stream(key, chunks)


def test_a_transient_store_error_is_retried(runtime: Runtime, wav_bytes: bytes) -> None:
    runtime.blobs = FlakyBlobStore(runtime.settings.data_dir / "blobs", failures=2)
    job = succeeded(runtime, wav_bytes)

    assert run_task(runtime, job.id) == "rendered"

    assert runtime.blobs.exists((job.result_prefix or "") + SPECTROGRAM_PNG)


def test_a_lasting_store_error_is_given_up_and_recorded(runtime: Runtime, wav_bytes: bytes) -> None:
    runtime.blobs = FlakyBlobStore(runtime.settings.data_dir / "blobs", failures=MAX_RETRIES + 1)
    job = succeeded(runtime, wav_bytes)

    assert run_task(runtime, job.id) == "failed"

    error = json.loads(runtime.blobs.get_bytes((job.result_prefix or "") + RENDER_ERROR_JSON))
    assert error["code"] == "render_failed"
    assert "storage unavailable" in error["message"]


def test_a_later_success_clears_an_earlier_error(runtime: Runtime, wav_bytes: bytes) -> None:
    runtime.blobs = FlakyBlobStore(runtime.settings.data_dir / "blobs", failures=MAX_RETRIES + 1)
    job = succeeded(runtime, wav_bytes)
    assert run_task(runtime, job.id) == "failed"

    assert run_task(runtime, job.id) == "rendered"

    assert not runtime.blobs.exists((job.result_prefix or "") + RENDER_ERROR_JSON)


def queued_tasks(runtime: Runtime) -> list[tuple[str, str, list[Any]]]:
    """(queue file suffix, task name, args) of each message the filesystem:// broker holds."""
    found = []
    for path in sorted((runtime.settings.broker_dir / "messages").glob("*.msg")):
        envelope = json.loads(path.read_text())
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        queue = ".".join(path.name.split(".")[-3:-1])  # <stamp>.<queue name>.msg
        found.append((queue, envelope["headers"]["task"], json.loads(body)[0]))
    return found


def test_a_succeeded_analysis_queues_its_plots_and_its_webhook(
    runtime: Runtime, wav_bytes: bytes
) -> None:
    job = submit(runtime, wav_bytes)
    with runtime.jobs.session() as s:
        row = s.get(JobRow, job.id)
        assert row is not None
        row.callback_url = "http://127.0.0.1:9/hook"

    assert runtime.celery.tasks[ANALYZE_TASK].apply(args=[job.id]).get() == "succeeded"

    assert sorted(queued_tasks(runtime)) == [
        ("earshot.render", RENDER_TASK, [job.id]),
        ("earshot.webhook", WEBHOOK_TASK, [job.id]),
    ]
    # A redelivery of the finished job queues nothing more.
    runtime.celery.tasks[ANALYZE_TASK].apply(args=[job.id]).get()
    assert len(queued_tasks(runtime)) == 2


def test_a_failed_analysis_queues_only_its_webhook(runtime: Runtime) -> None:
    job = submit(runtime, b"not audio, just words\n" * 40)
    with runtime.jobs.session() as s:
        row = s.get(JobRow, job.id)
        assert row is not None
        row.callback_url = "http://127.0.0.1:9/hook"

    assert runtime.celery.tasks[ANALYZE_TASK].apply(args=[job.id]).get() == "failed"

    assert queued_tasks(runtime) == [("earshot.webhook", WEBHOOK_TASK, [job.id])]


def test_a_succeeded_batch_analysis_queues_no_plots(runtime: Runtime, wav_bytes: bytes) -> None:
    # Batch plots are drawn when first asked for (the plot endpoints call request_render).
    job = submit(runtime, wav_bytes, priority=Priority.BATCH)
    assert runtime.celery.tasks[ANALYZE_TASK].apply(args=[job.id]).get() == "succeeded"
    assert queued_tasks(runtime) == []

    assert request_render(runtime, runtime.jobs.get(job.id))
    assert not request_render(runtime, runtime.jobs.get(job.id))
    assert queued_tasks(runtime) == [("earshot.render", RENDER_TASK, [job.id])]
    assert run_task(runtime, job.id) == "rendered"
    assert runtime.blobs.exists(result_prefix(job.id) + SPECTROGRAM_PNG)
