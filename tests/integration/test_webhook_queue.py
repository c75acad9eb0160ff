"""Webhooks have a queue and pool of their own: receivers that hang never delay anyone's plots.

Real processes on the embedded broker: the API, and one `earshot worker` per queue (as
`earshot dev` starts them), each with its own log so the test can tell which pool ran what.
Several jobs' callbacks point at a receiver that accepts connections and never answers; an
unrelated job's spectrogram must still arrive (the bound is a hang guard, not a speed
requirement) and the render pool must never have run a webhook task.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from core.names import WEBHOOK_TASK, Queue
from scripts.bench import harness
from tests.integration.conftest import SAMPLES, Service, free_port, service_env, wait_for

pytestmark = pytest.mark.integration

HUNG_JOBS = 6


@dataclass
class HangingReceiver:
    """Accepts every connection and never answers; counts the connections."""

    sock: socket.socket
    held: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.held.append(conn)  # kept open, never read from nor written to


@pytest.fixture
def hanging_receiver() -> Iterator[HangingReceiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)
    receiver = HangingReceiver(sock)
    thread = threading.Thread(target=receiver.serve, daemon=True)
    thread.start()
    yield receiver
    receiver.stop.set()
    thread.join(timeout=5)
    for conn in receiver.held:
        conn.close()
    sock.close()


@dataclass
class Pools:
    api_url: str
    api: Service
    workers: dict[Queue, Service]

    def assert_alive(self) -> None:
        self.api.assert_alive()
        for worker in self.workers.values():
            worker.assert_alive()


@pytest.fixture
def pools(tmp_path: Path, numba_cache: Path) -> Iterator[Pools]:
    # Every hung delivery in flight at once (the default holds two per receiver host and
    # defers the rest 5-10 s at a time): the webhook pool is as stuck as it gets, and the
    # test waits one attempt's budget for each hook's recorded failure, not several.
    env = service_env(
        tmp_path / "var",
        numba_cache,
        webhook_allow="127.0.0.1",
        webhook_per_host=str(HUNG_JOBS),
    )
    port = free_port()
    api = Service(["serve", "--port", str(port)], env=env, log=tmp_path / "api.log")
    workers = {
        q: Service(["worker", f"--queues={q.value}"], env=env, log=tmp_path / f"{q.name}.log")
        for q in (Queue.INTERACTIVE, Queue.RENDER, Queue.WEBHOOK)
    }
    running = Pools(f"http://127.0.0.1:{port}", api, workers)
    try:
        for queue, worker in workers.items():

            def ready(worker: Service = worker) -> bool:
                worker.assert_alive()
                return " ready." in worker.log()

            wait_for(ready, what=f"the {queue.value} worker to be ready")

        def healthy() -> bool:
            api.assert_alive()
            try:
                return httpx.get(f"{running.api_url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, what="the API to answer /healthz")
        yield running
    finally:
        harness.stop_all([api, *workers.values()])


def upload(client: httpx.Client, path: Path, **fields: str) -> dict:
    with path.open("rb") as f:
        answer = client.post("/v1/analyses", files={"file": (path.name, f)}, data=fields)
    assert answer.status_code == 202, answer.text
    job: dict = answer.json()
    return job


def test_hanging_receivers_never_delay_an_unrelated_jobs_plots(
    pools: Pools, hanging_receiver: HangingReceiver
) -> None:
    hook = f"http://127.0.0.1:{hanging_receiver.port}/hooks/earshot"
    with httpx.Client(base_url=pools.api_url, timeout=30) as client:
        hung = [
            upload(client, SAMPLES / "click120_cmajor.wav", callback_url=hook)["id"]
            for _ in range(HUNG_JOBS)
        ]

        def own_plots_drawn() -> bool:
            pools.assert_alive()
            paths = [f"/v1/analyses/{job_id}/spectrogram.png" for job_id in hung]
            return all(client.get(path).status_code == 200 for path in paths)

        def attempts_hang() -> bool:
            pools.assert_alive()
            return len(hanging_receiver.held) >= 2

        # The hung jobs' own plots are drawn (the render queue holds nothing of theirs) and the
        # webhook pool is stuck on the receiver: the situation under test.
        wait_for(own_plots_drawn, what="the hung jobs' own spectrograms")
        wait_for(attempts_hang, what="webhook attempts to reach the hanging receiver")

        started = time.monotonic()
        other = upload(client, SAMPLES / "sine440.flac")["id"]

        def spectrogram() -> bytes | None:
            pools.assert_alive()
            answer = client.get(f"/v1/analyses/{other}/spectrogram.png")
            return answer.content if answer.status_code == 200 else None

        png = wait_for(spectrogram, what="the unrelated job's spectrogram", timeout=120)
        latency_s = time.monotonic() - started
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        print(f"unrelated job: upload to spectrogram {latency_s:.1f} s with {HUNG_JOBS} hung hooks")

        def every_hook_failed_once() -> list[dict] | None:
            pools.assert_alive()
            jobs = [client.get(f"/v1/analyses/{job_id}").json() for job_id in hung]
            done = all(j["webhook"]["deliveries"] for j in jobs)
            return jobs if done else None

        jobs = wait_for(every_hook_failed_once, what="a recorded attempt of every hung webhook")

    for job in jobs:
        first = job["webhook"]["deliveries"][0]
        assert (first["outcome"], first["status_class"]) == ("failed", None), job
    render_log = pools.workers[Queue.RENDER].log()
    webhook_log = pools.workers[Queue.WEBHOOK].log()
    assert "earshot.render[" in render_log  # the render pool did draw the plots
    assert WEBHOOK_TASK + "[" not in render_log
    assert WEBHOOK_TASK + "[" in webhook_log
    assert "earshot.render[" not in webhook_log
    # The webhook pool is threads and skips the analysis warm-up.
    assert "analysis warmed up" not in webhook_log
    assert "analysis warmed up" in pools.workers[Queue.INTERACTIVE].log()
    assert "Traceback" not in webhook_log, webhook_log[-4000:]
