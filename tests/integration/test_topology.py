"""Issue #7's scaled-out topology, natively: `earshot migrate`, `earshot serve` and one `earshot
worker` per queue, each a separate process in its own working directory with its own data
directory, sharing only RabbitMQ (a vhost), PostgreSQL (a fresh database) and an S3 server.

One job goes through it from an HTTP upload to its plots; then the test proves that nothing of
the job was written to any process's own disk, that the API's and the interactive worker's
metrics count it, and that the upload's request id is on the log lines of all three hops.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.names import RESULT_JSON, Queue, result_prefix, upload_key
from scripts.bench import harness
from tests.integration.conftest import (
    REPO,
    Service,
    free_port,
    fresh_postgres_database,
    service_env,
    wait_for,
)
from tests.s3server import S3Server, s3_server

__all__ = ["s3_server"]  # the fixture is used by name; re-exported so ruff keeps the import

pytestmark = pytest.mark.integration

SAMPLE = REPO / "samples" / "click120_cmajor.ogg"
UPLOAD_ROUTE = "/v1/analyses"


@dataclass
class Node:
    """One process of the topology: its own folder (cwd, data dir, temp dir) and its log."""

    name: str
    root: Path
    service: Service | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "var"

    def log_lines(self) -> list[dict[str, object]]:
        """The JSON log lines of the process (anything else it printed is skipped)."""
        assert self.service is not None
        lines = []
        for line in self.service.log().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@dataclass
class Topology:
    api_url: str
    api_key: str
    blob_url: str
    s3: S3Server
    api: Node
    workers: dict[Queue, Node]
    worker_metrics_ports: dict[Queue, int]
    numba_cache: Path

    def nodes(self) -> list[Node]:
        return [self.api, *self.workers.values()]

    def services(self) -> list[Service]:
        return [n.service for n in self.nodes() if n.service is not None]


def node_env(node: Node, numba_cache: Path, shared: dict[str, str], s3: S3Server) -> dict[str, str]:
    node.root.mkdir(parents=True)
    (node.root / "tmp").mkdir()
    # The session's numba cache is the one folder the processes have in common: compiled
    # code, no job data (it is a warm-up cache, like the shared virtualenv), so the workers
    # need not compile from cold within this test's time.
    env = service_env(node.data_dir, numba_cache, **shared)
    env.update(s3.env())
    env["EARSHOT_LOG_FORMAT"] = "json"
    # Temporary copies of blobs (decoders need a file) go under the node's own folder too, so
    # the isolation check below sees them if they are left behind.
    env["TMPDIR"] = str(node.root / "tmp")
    # Each process keeps its metrics under its own data dir, as on separate hosts.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory,
    numba_cache: Path,
    rabbitmq_vhost: str,
    s3_server: S3Server,
) -> Iterator[Topology]:
    base = tmp_path_factory.mktemp("topology")
    logs = base / "logs"
    logs.mkdir()
    api_key = secrets.token_urlsafe(24)
    blob_url = s3_server.blob_url()
    # A database of its own: in the session's shared one another test may already have
    # analysed this sample, and the upload would be answered from that result (no worker).
    with fresh_postgres_database() as database_url:
        shared = {
            "broker_url": f"amqp://guest:guest@127.0.0.1:5672/{rabbitmq_vhost}",
            "database_url": database_url,
            "blob_url": blob_url,
            "api_keys": api_key,
        }
        migrate = Node("migrate", base / "migrate")
        env = node_env(migrate, numba_cache, shared, s3_server)
        done = subprocess.run(
            [sys.executable, "-m", "earshot", "migrate"],
            cwd=migrate.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr

        api = Node("api", base / "api")
        workers = {q: Node(q.value, base / q.name.lower()) for q in Queue}
        ports = {q: free_port() for q in Queue}
        api_port = free_port()
        topo = Topology(
            api_url=f"http://127.0.0.1:{api_port}",
            api_key=api_key,
            blob_url=blob_url,
            s3=s3_server,
            api=api,
            workers=workers,
            worker_metrics_ports=ports,
            numba_cache=numba_cache,
        )
        try:
            api.service = Service(
                ["serve", "--host", "127.0.0.1", "--port", str(api_port)],
                env=node_env(api, numba_cache, shared, s3_server),
                log=logs / "api.log",
                cwd=api.root,
            )
            for queue, node in workers.items():
                node.service = Service(
                    [
                        "worker",
                        "--queues",
                        queue.value,
                        "--concurrency",
                        "1",
                        "--metrics-port",
                        str(ports[queue]),
                    ],
                    env=node_env(node, numba_cache, shared, s3_server),
                    log=logs / f"{node.name}.log",
                    cwd=node.root,
                )
            yield topo
        finally:
            harness.stop_all(topo.services())


def get(url: str, **kw: object) -> httpx.Response | None:
    """``GET url``, or None while nothing answers there yet."""
    try:
        return httpx.get(url, timeout=10.0, **kw)  # type: ignore[arg-type]
    except httpx.TransportError:
        return None


def samples_of(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as ``{(sample name, labels): value}``."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_job_crosses_processes_that_share_only_the_servers(topology: Topology) -> None:
    topo = topology
    auth = {"Authorization": f"Bearer {topo.api_key}"}
    request_id = f"topo-{secrets.token_hex(6)}"
    audio = SAMPLE.read_bytes()

    def api_ready() -> bool:
        for service in topo.services():
            service.assert_alive()
        answer = get(f"{topo.api_url}/readyz")
        return answer is not None and answer.status_code == 200

    wait_for(api_ready, what="the API to be ready")

    # 1. Upload through HTTP and follow the job to its end.
    with httpx.Client(base_url=topo.api_url, headers=auth, timeout=30.0) as client:
        created = client.post(
            UPLOAD_ROUTE,
            files={"file": (SAMPLE.name, audio, "audio/ogg")},
            headers={"X-Request-ID": request_id},
        )
        assert created.status_code == 202, created.text
        assert created.headers["X-Request-ID"] == request_id
        job = created.json()
        job_id = job["id"]
        assert job["cached"] is False  # a fresh database: the worker has to analyse it

        def finished() -> dict[str, object] | None:
            for service in topo.services():
                service.assert_alive()
            current = client.get(f"{UPLOAD_ROUTE}/{job_id}").raise_for_status().json()
            return current if current["status"] in ("succeeded", "failed", "canceled") else None

        final = wait_for(finished, what=f"job {job_id} to finish")
        assert final["status"] == "succeeded", final

        result_response = client.get(f"{UPLOAD_ROUTE}/{job_id}/result")
        assert result_response.status_code == 200, result_response.text
        result = result_response.json()
        assert result["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3)
        assert (result["summary"]["key"]["tonic"], result["summary"]["key"]["mode"]) == (
            "C",
            "major",
        )
        assert result["audio"]["sha256"] == hashlib.sha256(audio).hexdigest()

        csv_response = client.get(f"{UPLOAD_ROUTE}/{job_id}/result", params={"format": "csv"})
        assert csv_response.status_code == 200, csv_response.text
        csv_lines = csv_response.text.splitlines()
        assert csv_lines[0].startswith("time_s,")
        assert len(csv_lines) > 100  # one row per frame of a few seconds of audio

        def plot(name: str) -> httpx.Response | None:
            for service in topo.services():
                service.assert_alive()
            answer = client.get(f"{UPLOAD_ROUTE}/{job_id}/{name}")
            assert answer.status_code in (200, 409), answer.text  # 409: not drawn yet
            return answer if answer.status_code == 200 else None

        waveform = wait_for(lambda: plot("waveform.json"), what="the waveform").json()
        assert waveform["length"] > 0 and len(waveform["data"]) == 2 * waveform["length"]
        spectrogram = wait_for(lambda: plot("spectrogram.png"), what="the spectrogram")
        assert spectrogram.content.startswith(b"\x89PNG\r\n\x1a\n")

    # 2. Isolation: the job's bytes are in S3 and on no process's own disk.
    import boto3

    bucket, _, prefix = topo.blob_url.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=topo.s3.endpoint_url,
        region_name=topo.s3.region,
        aws_access_key_id=topo.s3.access_key_id,
        aws_secret_access_key=topo.s3.secret_access_key,
    )
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    keys = {item["Key"].removeprefix(f"{prefix}/") for item in listing.get("Contents", [])}
    assert upload_key(job_id) in keys, keys
    assert result_prefix(job_id) + RESULT_JSON in keys, keys
    stored = s3.get_object(Bucket=bucket, Key=f"{prefix}/{result_prefix(job_id)}{RESULT_JSON}")
    assert stored["Body"].read() == result_response.content

    for path in files_under(topo.numba_cache):
        assert audio not in path.read_bytes(), (path, "the shared JIT cache holds the upload")
    for node in topo.nodes():
        # The data dir is in use (so scanning it is not vacuous) but holds none of the
        # embedded mode's state: no broker folder, no SQLite file, no local blobs.
        assert (node.data_dir / "metrics").is_dir(), f"{node.name} ignored EARSHOT_DATA_DIR"
        for embedded in ("broker", "blobs", "earshot.db"):
            assert not (node.data_dir / embedded).exists(), (node.name, embedded)
        for path in files_under(node.root):
            assert job_id not in path.name, (node.name, path)
            content = path.read_bytes()
            assert audio not in content, (node.name, path, "holds the upload")
            assert result_response.content not in content, (node.name, path, "holds the result")
            assert csv_response.content not in content, (node.name, path, "holds the CSV")

    # 3. Metrics: the API counted the upload, the interactive worker the analysis.
    api_metrics = samples_of(httpx.get(f"{topo.api_url}/metrics", timeout=10.0).text)
    posted = frozenset({("method", "POST"), ("route", UPLOAD_ROUTE), ("status", "202")})
    assert api_metrics[("earshot_http_requests_total", posted)] == 1.0
    uploaded = api_metrics[
        ("earshot_http_upload_bytes_total", frozenset({("route", UPLOAD_ROUTE)}))
    ]
    # The multipart body: the file plus its boundaries and part headers.
    assert len(audio) <= uploaded < len(audio) + 1024

    port = topo.worker_metrics_ports[Queue.INTERACTIVE]
    worker_metrics = samples_of(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text)
    succeeded = frozenset({("status", "succeeded"), ("queue", Queue.INTERACTIVE.value)})
    assert worker_metrics[("earshot_jobs_finished_total", succeeded)] == 1.0
    # The batch pool saw no job: its metrics live on its own host, not summed with these.
    batch_port = topo.worker_metrics_ports[Queue.BATCH]
    batch_metrics = samples_of(
        httpx.get(f"http://127.0.0.1:{batch_port}/metrics", timeout=10.0).text
    )
    assert not any(
        name == "earshot_jobs_finished_total" and value > 0
        for (name, _), value in batch_metrics.items()
    )

    # 4. Logs: one request id from the upload, through the analysis, to the plots.
    def messages(node: Node) -> list[str]:
        lines = [e for e in node.log_lines() if e.get("request_id") == request_id]
        # Every worker line of the request names its job too; the API's access line has none.
        assert all(e["job_id"] == job_id for e in lines if node is not topo.api), lines
        return [str(e["message"]) for e in lines]

    api_messages = messages(topo.api)
    assert any(f"POST {UPLOAD_ROUTE} " in m and " 202" in m for m in api_messages), (
        api_messages,
        topo.api.log_lines()[-20:],
    )
    analysis_messages = messages(topo.workers[Queue.INTERACTIVE])
    assert any(f"earshot.analyze[{job_id}] succeeded" in m for m in analysis_messages), (
        analysis_messages,
        topo.workers[Queue.INTERACTIVE].log_lines()[-20:],
    )
    # The task's own steps, not only Celery's closing line, carry the ids.
    assert any(m.startswith(f"job {job_id}: analysing") for m in analysis_messages)
    assert any(m.startswith(f"job {job_id} succeeded:") for m in analysis_messages)
    render_messages = messages(topo.workers[Queue.RENDER])
    assert any("earshot.render[" in m and "succeeded" in m for m in render_messages), (
        render_messages,
        topo.workers[Queue.RENDER].log_lines()[-20:],
    )
    assert not [e for e in topo.workers[Queue.BATCH].log_lines() if e.get("job_id") == job_id]
