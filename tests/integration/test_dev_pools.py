"""`earshot dev`'s pools: a batch runs on every core, an interactive upload jumps the batch queue.

A real `earshot dev` (embedded: filesystem://, SQLite) with EARSHOT_WORKER_CONCURRENCY=2: its
analysis pool's two processes take batch jobs while nothing interactive waits, and each takes
a waiting interactive job first. The evidence is which process logged each job's analysis
(every JSON log line carries its pid) and the order the job store saw the jobs start in; no
timing is asserted.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.integration.conftest import Service, free_port, service_env, wait_for

SR = 22050
# A flood deep enough that an interactive job taken in queue order would start after most of it.
FLOOD = 16


def clip(folder: Path, i: int, seconds: float = 2.0) -> Path:
    """A distinct clip (a tone and clicks, seeded by ``i``): no upload hits the cache."""
    t = np.arange(int(seconds * SR)) / SR
    y = 0.2 * np.sin(2 * np.pi * (180.0 + 7.0 * i) * t)
    y[:: SR // 2] += 0.6
    y += 0.01 * np.random.default_rng(i).standard_normal(t.size)
    path = folder / f"clip{i:03d}.wav"
    sf.write(path, np.clip(y, -1, 1).astype(np.float32), SR, subtype="PCM_16")
    return path


def moment(value: object) -> datetime.datetime:
    return datetime.datetime.fromisoformat(str(value))


class Dev:
    def __init__(self, service: Service, url: str) -> None:
        self.service, self.url = service, url

    def upload(self, path: Path, priority: str) -> str:
        with path.open("rb") as f:
            answer = httpx.post(
                f"{self.url}/v1/analyses",
                files={"file": (path.name, f, "audio/wav")},
                data={"priority": priority},
                timeout=30,
            )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def jobs(self, ids: list[str]) -> dict[str, dict[str, object]]:
        def all_done() -> dict[str, dict[str, object]] | None:
            self.service.assert_alive()
            rows = {i: httpx.get(f"{self.url}/v1/analyses/{i}", timeout=10).json() for i in ids}
            if all(r["status"] in ("succeeded", "failed", "canceled") for r in rows.values()):
                return rows
            return None

        rows = wait_for(all_done, what=f"{len(ids)} jobs to finish")
        assert {r["status"] for r in rows.values()} == {"succeeded"}, rows
        return rows

    def analysing_pids(self) -> dict[str, int]:
        """Job id → pid of the process that logged "analysing" for it."""
        pids = {}
        for line in self.service.log().splitlines():
            if '"analysing ' not in line and ": analysing " not in line:
                continue
            record = json.loads(line)
            if record.get("job_id") and "analysing" in record["message"]:
                pids[record["job_id"]] = record["pid"]
        return pids


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, numba_cache: Path) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("dev-pools")
    port = free_port()
    # Two processes whatever this machine's core count.
    env = service_env(root / "var", numba_cache, log_format="json", worker_concurrency="2")
    service = Service(["dev", "--port", str(port)], env=env, log=root / "dev.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        service.assert_alive()
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, what="every queue of `earshot dev` to have a warm worker")
        yield Dev(service, url)
    finally:
        service.stop()


def test_a_batch_is_analysed_by_two_processes(dev: Dev, tmp_path: Path) -> None:
    ids = [dev.upload(clip(tmp_path, i), "batch") for i in range(8)]
    dev.jobs(ids)
    pids = dev.analysing_pids()
    assert set(ids) <= set(pids)
    assert len({pids[i] for i in ids}) >= 2, pids


def test_an_interactive_upload_starts_before_the_batch_queued_ahead_of_it(
    dev: Dev, tmp_path: Path
) -> None:
    # Long enough, and sent at once, that most of the flood is still queued when the
    # interactive upload arrives.
    clips = [clip(tmp_path, 100 + i, seconds=20.0) for i in range(FLOOD)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        flood = list(pool.map(lambda path: dev.upload(path, "batch"), clips))
    interactive = dev.upload(clip(tmp_path, 999), "interactive")
    rows = dev.jobs([*flood, interactive])
    created = moment(rows[interactive]["created_at"])
    started = moment(rows[interactive]["started_at"])
    batch_started = [moment(rows[i]["started_at"]) for i in flood]
    # It jumped the queue: batch jobs queued before it started after it ...
    assert any(when > started for when in batch_started), "the flood was over before the upload"
    # ... and while it waited, only a process that finished the batch job it was running
    # before the other one did took another: at most one per process.
    overtaking = [when for when in batch_started if created < when < started]
    assert len(overtaking) <= 2, (len(overtaking), FLOOD)
