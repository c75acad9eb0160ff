"""``GET /metrics``: HTTP, worker and queue-depth metrics, on the real app and runtime.

Counters are process-wide and other tests add to them, so each test compares a value before
and after what it does. The aggregation test writes samples from two real processes into one
multiprocess folder and reads the sum back through the route.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from celery.worker.request import Request
from fastapi.testclient import TestClient
from kombu import Queue as KombuQueue
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import MULTIPROC_ENV, prune_dead_processes, serve
from core.names import ANALYZE_TASK, JobStatus, Priority, Queue
from tests.api.conftest import runtime_of, upload, wav_bytes

REPO = Path(__file__).resolve().parents[2]

# What one worker process does to its metrics: one finished job, one timed analysis.
WORKER_SCRIPT = """
import sys
from pathlib import Path
from core.metrics import enable_multiprocess, observe_analysis, record_job_finished
from core.settings import Settings

enable_multiprocess(Settings(data_dir=Path(sys.argv[1])))
record_job_finished("succeeded", queue="earshot.batch")
observe_analysis(seconds=1.5, audio_seconds=30.0)
"""


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, sample: str, **labels: str) -> float:
    """The value of ``sample`` with exactly ``labels``; 0.0 when the series does not exist yet."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return 0.0


def test_request_is_counted_by_route_template(client: TestClient) -> None:
    before = scrape(client)

    assert client.get("/v1/analyses/0123456789abcdef0123456789abcdef").status_code == 404
    assert client.get("/no/such/page").status_code == 404

    after = scrape(client)
    route = "/v1/analyses/{job_id}"
    labels = {"method": "GET", "route": route, "status": "404"}
    assert value(after, "earshot_http_requests_total", **labels) == (
        value(before, "earshot_http_requests_total", **labels) + 1
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "earshot_http_requests_total", **unmatched) == (
        value(before, "earshot_http_requests_total", **unmatched) + 1
    )
    # The job id itself never becomes a label value.
    assert "0123456789abcdef0123456789abcdef" not in after
    latency = {"method": "GET", "route": route}
    assert value(after, "earshot_http_request_duration_seconds_count", **latency) == (
        value(before, "earshot_http_request_duration_seconds_count", **latency) + 1
    )


def test_upload_is_counted_with_its_bytes(client: TestClient) -> None:
    before = scrape(client)
    data = wav_bytes(seed=11)

    assert upload(client, data).status_code == 202

    after = scrape(client)
    posted = {"method": "POST", "route": "/v1/analyses", "status": "202"}
    assert value(after, "earshot_http_requests_total", **posted) == (
        value(before, "earshot_http_requests_total", **posted) + 1
    )
    received = value(after, "earshot_http_upload_bytes_total", route="/v1/analyses") - value(
        before, "earshot_http_upload_bytes_total", route="/v1/analyses"
    )
    # The multipart body is the file plus its boundaries and part headers.
    assert len(data) < received < len(data) + 1024


def test_queue_depth_counts_queued_jobs_per_priority(client: TestClient) -> None:
    assert value(scrape(client), "earshot_queue_depth", priority="interactive") == 0
    for seed in (1, 2):
        assert upload(client, wav_bytes(seed=seed)).status_code == 202
    response = upload(client, wav_bytes(seed=3), priority=Priority.BATCH.value)
    assert response.status_code == 202
    runtime_of(client).jobs.cancel(upload(client, wav_bytes(seed=4)).json()["id"])

    text = scrape(client)

    assert value(text, "earshot_queue_depth", priority="interactive") == 2
    assert value(text, "earshot_queue_depth", priority="batch") == 1


def deliver_one(client: TestClient, queue: Queue) -> None:
    """Take the next message off the filesystem:// broker and run it as a worker would."""
    app = runtime_of(client).celery
    with app.connection_for_read() as conn:
        message = KombuQueue(queue.value, routing_key=queue.value)(conn.default_channel).get(
            no_ack=True
        )
        assert message is not None
        Request(message, app=app, task=app.tasks[message.headers["task"]]).execute()


def test_worker_counts_a_finished_job_and_times_the_task(client: TestClient) -> None:
    import tasks.analyze  # noqa: F401 - registers earshot.analyze, as a worker does

    answer = upload(client, wav_bytes(seed=31), priority=Priority.BATCH.value)
    runtime_of(client).jobs.cancel(answer.json()["id"])
    before = scrape(client)

    # The real task on the real message: it finds the job canceled and drops it.
    deliver_one(client, Queue.BATCH)

    after = scrape(client)
    canceled = {"status": "canceled", "queue": Queue.BATCH.value}
    assert value(after, "earshot_jobs_finished_total", **canceled) == (
        value(before, "earshot_jobs_finished_total", **canceled) + 1
    )
    timed = {"task": ANALYZE_TASK, "queue": Queue.BATCH.value}
    assert value(after, "earshot_task_duration_seconds_count", **timed) == (
        value(before, "earshot_task_duration_seconds_count", **timed) + 1
    )


def test_only_the_analyze_task_counts_jobs(client: TestClient) -> None:
    app = runtime_of(client).celery

    @app.task(name="earshot.test.other")
    def other(job_id: str) -> str:
        return JobStatus.FAILED.value  # a word that is also a job state, from another task

    before = scrape(client)
    app.send_task("earshot.test.other", args=["job-1"], queue=Queue.BATCH.value)
    deliver_one(client, Queue.BATCH)
    after = scrape(client)

    failed = {"status": "failed", "queue": Queue.BATCH.value}
    assert value(after, "earshot_jobs_finished_total", **failed) == value(
        before, "earshot_jobs_finished_total", **failed
    )
    timed = {"task": "earshot.test.other", "queue": Queue.BATCH.value}
    assert value(after, "earshot_task_duration_seconds_count", **timed) == (
        value(before, "earshot_task_duration_seconds_count", **timed) + 1
    )


def test_scrape_sums_the_processes_of_a_host(
    tmp_path: Path, make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "host"
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(data_dir)],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
        )
        for _ in range(2)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    metrics_dir = data_dir / "metrics"
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # one file per process

    monkeypatch.setenv(MULTIPROC_ENV, str(metrics_dir))
    text = scrape(make_client())

    assert (
        value(text, "earshot_jobs_finished_total", status="succeeded", queue="earshot.batch") == 2
    )
    assert value(text, "earshot_analysis_seconds_per_audio_second_count") == 2
    assert value(text, "earshot_analysis_seconds_per_audio_second_sum") == pytest.approx(0.1)
    assert value(text, "earshot_analysis_seconds_per_audio_second_bucket", le="0.05") == 2
    # Queue depth comes from the job store, not the files: it is there in this mode too.
    assert value(text, "earshot_queue_depth", priority="batch") == 0

    # Both writers have exited: a new run on this host starts from zero.
    files = len(list(metrics_dir.glob("*.db")))
    assert files >= 4  # a counter file and a histogram file per writer
    assert prune_dead_processes(metrics_dir) == files
    assert list(metrics_dir.glob("*.db")) == []


def test_prune_keeps_the_files_of_live_processes(tmp_path: Path) -> None:
    live = tmp_path / f"counter_{os.getpid()}.db"
    live.write_bytes(b"")
    assert prune_dead_processes(tmp_path) == 0
    assert live.exists()


def test_worker_host_serves_its_own_scrape(client: TestClient) -> None:
    assert upload(client, wav_bytes(seed=21), priority=Priority.BATCH.value).status_code == 202
    server = serve(0, host="127.0.0.1", store=runtime_of(client).jobs, directory=None)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    assert value(response.text, "earshot_queue_depth", priority="batch") == 1
