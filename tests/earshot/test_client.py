"""``earshot.client.Client`` against the real API app served by uvicorn on a free local port.

No worker runs here: a job is finished the way a worker does it (result files into the blob
store, then the job row), so these tests are about the client and the HTTP it speaks. The
whole path through a real worker is tests/integration/test_client.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from api.app import create_app
from core.names import FRAMES_CSV, FRAMES_NPZ, RESULT_JSON, result_prefix
from core.runtime import Runtime
from core.settings import Settings
from earshot.client import (
    ApiProblem,
    Client,
    NotAnEarshotApi,
    ServiceUnreachable,
    TransientExhausted,
    WaitTimeout,
)
from tests.integration.submit_fixtures import free_port, other_server

START_BOUND_S = 30.0


def write_wav(path: Path, *, seconds: float = 0.25, sr: int = 8000, seed: int = 0) -> Path:
    frames = bytes((i * 7 + seed) % 256 for i in range(int(seconds * sr) * 2))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(frames)
    return path


class Served:
    def __init__(self, url: str, runtime: Runtime) -> None:
        self.url = url
        self.runtime = runtime


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The real app (SQLite, local blobs, filesystem:// broker) behind uvicorn in a thread."""
    app = create_app(Settings(data_dir=tmp_path / "var"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_BOUND_S
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, f"uvicorn not started after {START_BOUND_S} s"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", app.state.runtime)
    finally:
        server.should_exit = True
        thread.join(timeout=START_BOUND_S)


def finish(runtime: Runtime, job_id: str, *, document: dict[str, Any], npz: bytes) -> bytes:
    """Do what a worker does for a succeeded job; returns the frame CSV it stored."""
    assert runtime.jobs.mark_running(job_id)
    prefix = result_prefix(job_id)
    frames_csv = b"time_s,rms\n0.0,0.5\n0.5,0.25\n"
    runtime.blobs.put_bytes(prefix + FRAMES_CSV, frames_csv)
    runtime.blobs.put_bytes(prefix + FRAMES_NPZ, npz)
    runtime.blobs.put_bytes(prefix + RESULT_JSON, json.dumps(document).encode())
    assert runtime.jobs.mark_succeeded(
        job_id, result_prefix=prefix, analyzer_version=runtime.analyzer_version
    )
    return frames_csv


def npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, time_s=np.array([0.0, 0.5]), rms=np.array([0.5, 0.25], dtype=np.float32))
    return buf.getvalue()


def test_submit_get_list_and_cancel_a_job(served: Served, tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "take 1.wav")
    with Client(served.url) as client:
        client.check()
        job, created = client.upload(audio, profile="fast", priority="batch")
        assert created and job["status"] == "queued"
        # The server hashed what it received: the same sha256 as the file on disk.
        assert job["sha256"] == hashlib.sha256(audio.read_bytes()).hexdigest()
        assert (job["filename"], job["profile"], job["priority"]) == ("take 1.wav", "fast", "batch")
        again, created_again = client.upload(audio, profile="fast", priority="batch")
        assert (again["id"], created_again) == (job["id"], False)  # the content-derived key
        assert client.get(job["id"])["id"] == job["id"]
        other = client.submit(write_wav(tmp_path / "b.wav", seed=1))
        assert other["id"] != job["id"]
        assert {j["id"] for j in client.list(page_size=1)} == {job["id"], other["id"]}
        assert [j["id"] for j in client.list(status="queued")].count(job["id"]) == 1
        assert client.cancel(job)["status"] == "canceled"
        assert served.runtime.jobs.get(job["id"]).status.value == "canceled"
        with pytest.raises(ApiProblem) as finished:
            client.cancel(job["id"])
        assert (finished.value.status, finished.value.code) == (409, "already_finished")


def test_result_in_every_format_and_download(served: Served, tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav")
    document = {"audio": {"duration_s": 0.25}, "summary": {"tempo": {"bpm": 120.0}}}
    with Client(served.url) as client:
        job = client.submit(audio)
        frames_csv = finish(served.runtime, job["id"], document=document, npz=npz_bytes())
        done = client.wait(job, poll_interval=0.05, timeout=30)
        assert done["status"] == "succeeded"
        assert client.result(done) == document
        assert client.result(done["id"], "json") == document
        rows = list(csv.reader(io.StringIO(client.result(done, "csv").decode())))
        assert rows[0] == ["time_s", "rms"] and len(rows) == 3
        assert client.result(done, "csv") == frames_csv
        with np.load(io.BytesIO(client.result(done, "npz"))) as npz:
            assert sorted(npz.files) == ["rms", "time_s"]
            assert npz["rms"].tolist() == [0.5, 0.25]
        dest = client.download(done["id"], "npz", tmp_path / "out" / "a.npz")
        with np.load(dest) as npz:
            assert npz["time_s"].tolist() == [0.0, 0.5]
        assert [p.name for p in dest.parent.iterdir()] == ["a.npz"]  # no temporary left
        # What a notebook user calls: the document of a file analysed before (same key).
        assert client.analyze(audio, poll_interval=0.05, timeout=30) == document


def test_wait_ends_at_its_timeout_and_a_refused_upload_is_a_problem(
    served: Served, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_bytes(b"liner notes, not audio\n" * 20)
    with Client(served.url) as client:
        job = client.submit(write_wav(tmp_path / "a.wav"))
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as waited:
            client.wait(job, poll_interval=0.05, timeout=0.3)
        assert waited.value.job["status"] == "queued"
        assert time.monotonic() - started < 30  # a bound, not a speed claim
        with pytest.raises(ApiProblem) as refused:
            client.analyze(notes)
        assert refused.value.status == 415
        assert [j["id"] for j in client.list()] == [job["id"]]


def flaky(failures: int) -> Callable[[str, str], tuple[int, str, bytes]]:
    """503 with Retry-After: 0 for the first ``failures`` requests, then a job."""
    seen = {"n": 0}
    lock = threading.Lock()

    def answer(method: str, path: str) -> tuple[int, str, bytes]:
        with lock:
            seen["n"] += 1
            n = seen["n"]
        if n <= failures:
            body = {"code": "broker_unavailable", "detail": "try again"}
            return 503, "application/problem+json", json.dumps(body).encode()
        return 200, "application/json", json.dumps({"id": "abc", "status": "queued"}).encode()

    return answer


def test_transient_answers_are_retried_then_given_up(tmp_path: Path) -> None:
    retries: list[tuple[str, float]] = []
    with other_server(flaky(2)) as server:
        with Client(server.url, on_retry=lambda what, delay: retries.append((what, delay))) as c:
            assert c.get("abc") == {"id": "abc", "status": "queued"}
        assert server.requests == [("GET", "/v1/analyses/abc")] * 3
    assert len(retries) == 2 and all("broker_unavailable" in what for what, _ in retries)
    with other_server(flaky(100)) as server:
        with Client(server.url, max_retries=1) as c, pytest.raises(TransientExhausted) as gave_up:
            c.get("abc")
        assert len(server.requests) == 2
    assert gave_up.value.code == "broker_unavailable"


def test_check_tells_a_closed_port_from_another_server() -> None:
    with Client(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(ServiceUnreachable):
        client.check()

    def not_found(method: str, path: str) -> tuple[int, str, bytes]:
        return 404, "text/html", b"<h1>nope</h1>"

    with other_server(not_found) as server, Client(server.url) as client:
        with pytest.raises(NotAnEarshotApi, match="404"):
            client.check()
        assert server.requests == [("GET", "/healthz")]


def test_spotify_views_of_a_real_analysis_and_their_batch_files(
    served: Served, tmp_path: Path
) -> None:
    """A sample analysed by the real worker task; the views through the client and as the
    files ``earshot submit --format audio-features,audio-analysis,segments`` writes."""
    from earshot.batch.discover import Input
    from earshot.batch.engine import Batch, Options
    from earshot.batch.manifest import Manifest
    from earshot.batch.progress import Reporter
    from tasks.analyze import run_analysis

    # samples/README.md: 120 BPM clicks over C - F - G - C, in C major.
    sample = Path(__file__).resolve().parents[2] / "samples" / "click120_cmajor.ogg"
    with Client(served.url) as client:
        job = client.submit(sample)

        def no_retry(exc: Exception) -> None:
            raise AssertionError(exc)

        assert run_analysis(served.runtime, job["id"], retry=no_retry) == "succeeded"
        job = client.wait(job, poll_interval=0.05, timeout=30)
        features = client.audio_features(job)
        assert (features["key"], features["mode"], features["duration_ms"]) == (0, 1, 8000)
        assert features["id"] == job["id"]
        analysis = client.audio_analysis(job["id"])
        segments = client.result(job, "segments")
        assert len(analysis["segments"]) == len(segments)
        assert [b["start"] for b in analysis["beats"]] == client.result(job)["summary"]["beats_s"]

        out = tmp_path / "out"
        out.mkdir()
        formats = ("json", "segments", "audio-features", "audio-analysis")
        manifest = Manifest(out / "manifest.jsonl")
        manifest.open()
        options = Options(out=out, priority="interactive", formats=formats)
        batch = Batch(
            client, manifest, Reporter(total=1, json_lines=True, stream=io.StringIO()), options
        )
        # The same file and key as the upload above: the batch finds the analysed job.
        assert batch.process(Input(path=sample, rel="clicks/a.ogg")) == "succeeded"
        manifest.close()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert written == [
        "clicks/a.ogg.audio-analysis.json",
        "clicks/a.ogg.audio-features.json",
        "clicks/a.ogg.json",
        "clicks/a.ogg.segments.json",
    ]
    assert json.loads((out / "clicks/a.ogg.audio-features.json").read_text()) == features
    assert json.loads((out / "clicks/a.ogg.audio-analysis.json").read_text()) == analysis
    assert json.loads((out / "clicks/a.ogg.segments.json").read_text()) == segments


def test_wait_asks_once_per_job_unless_it_follows_the_changes(
    served: Served, tmp_path: Path
) -> None:
    """Without ``on_change`` the server holds the request past ``running`` until the job ends
    (``until=finished``): one request for a job that starts and ends while it waits; with
    ``on_change`` one per status change, each seen."""
    jobs = served.runtime.jobs
    document = {"audio": {"duration_s": 0.25}}
    with Client(served.url) as client:
        asked: list[str] = []
        real_request = client.transport.request

        def counting(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(f"{method} {path}")
            return real_request(method, path, *args, **kwargs)

        client.transport.request = counting  # type: ignore[method-assign]
        for follow in (False, True):
            job = client.submit(write_wav(tmp_path / f"{follow}.wav", seed=int(follow)))
            # A worker claims the job while the request is held, and ends it a little later.
            starts = threading.Timer(0.3, jobs.claim, args=[job["id"]])
            ends = threading.Timer(0.6, finish, args=[served.runtime, job["id"]])
            ends.kwargs = {"document": document, "npz": npz_bytes()}
            seen: list[str] = []
            asked.clear()
            starts.start()
            ends.start()
            done = client.wait(
                job,
                poll_interval=20,
                timeout=30,
                on_change=(lambda j, seen=seen: seen.append(j["status"])) if follow else None,
            )
            starts.join()
            ends.join()
            assert done["status"] == "succeeded"
            gets = [a for a in asked if a.startswith(f"GET /v1/analyses/{job['id']}")]
            if follow:
                assert seen == ["running", "succeeded"] and len(gets) == 2
            else:
                assert len(gets) == 1 and gets[0].endswith("&until=finished")
