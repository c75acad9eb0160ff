"""`earshot dev`'s process lifecycle: its children die with it, one dev per data dir, and a
restart after a crash finishes the job the crashed dev was running.

Real `python -m earshot dev` children on free ports, each with its own data dir (the embedded
mode needs no server). Processes are counted from /proc, not asked of the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.names import RESULT_JSON, JobStatus, Queue
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from tests.integration.conftest import (
    REPO,
    Service,
    free_port,
    make_long_wav,
    service_env,
    submit_file,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.integration

# Bound on how long the kernel and the children take to be gone once the dev parent is; a
# bound to fail on, not a speed claim.
GONE_S = 30.0


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(root: int) -> set[int]:
    """Every process under ``root`` in the /proc parent tree."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Dev:
    def __init__(self, service: Service, port: int, data_dir: Path) -> None:
        self.service = service
        self.port = port
        self.data_dir = data_dir

    @property
    def pid(self) -> int:
        return self.service.process.pid


def start_dev(root: Path, data_dir: Path, numba_cache: Path, name: str) -> Dev:
    """A dev answering /healthz with every worker pool ready; its whole tree is then up."""
    port = free_port()
    service = Service(
        ["dev", "--port", str(port)],
        env=service_env(data_dir, numba_cache),
        log=root / f"{name}.log",
    )

    def ready() -> bool:
        service.assert_alive()
        # /readyz answers 200 once every queue has a warm worker, and each queue has one pool:
        # every pool has forked its processes by then, whatever pools dev starts.
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, what=f"`earshot dev` ({name}) to serve with every worker ready")
    return Dev(service, port, data_dir)


def wait_gone(pids: set[int], dev: Dev) -> None:
    wait_for(
        lambda: not [p for p in pids if alive(p)],
        what=f"processes {sorted(p for p in pids if alive(p))} to be gone",
        timeout=GONE_S,
    )
    # What a user sees: the port is free for the next dev.
    assert not port_open(dev.port), dev.service.log()[-3000:]


def test_sigkill_of_dev_takes_all_its_processes_along(tmp_path: Path, numba_cache: Path) -> None:
    dev = start_dev(tmp_path, tmp_path / "var", numba_cache, "dev")
    tree = descendants(dev.pid)
    # The API, a worker per queue, and the workers' pool processes (grandchildren).
    assert len(tree) > 1 + len(Queue), tree
    assert any(parent_of(p) != dev.pid for p in tree), "no pool process under a worker"

    os.kill(dev.pid, signal.SIGKILL)  # the parent alone: kill -9 <pid>

    wait_gone(tree, dev)
    dev.service.stop()


def test_sighup_of_dev_is_a_clean_stop(tmp_path: Path, numba_cache: Path) -> None:
    dev = start_dev(tmp_path, tmp_path / "var", numba_cache, "dev")
    tree = descendants(dev.pid)

    os.kill(dev.pid, signal.SIGHUP)  # the terminal closed

    assert dev.service.process.wait(timeout=60) == 0, dev.service.log()[-4000:]
    wait_gone(tree, dev)
    assert "Traceback" not in dev.service.log(), dev.service.log()[-4000:]
    dev.service.stop()


def test_sigterm_of_dev_is_a_quiet_stop_after_one_ready_line_per_pool(
    tmp_path: Path, numba_cache: Path
) -> None:
    dev = start_dev(tmp_path, tmp_path / "var", numba_cache, "dev")
    tree = descendants(dev.pid)
    # The API and the worker pools are dev's children (from /proc, not from its log).
    pools = len([pid for pid in tree if parent_of(pid) == dev.pid]) - 1

    os.kill(dev.pid, signal.SIGTERM)  # what a service manager or `kill <pid>` sends

    assert dev.service.process.wait(timeout=60) == 0, dev.service.log()[-4000:]
    wait_gone(tree, dev)
    log = dev.service.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert errors == [], errors
    assert "Traceback" not in log, log[-4000:]
    # filesystem:// has no host name; kombu said so at every connection it described.
    assert "No hostname was supplied" not in log
    ready = [r["message"] for r in records if r["message"].startswith("worker pool ")]
    assert len(ready) == pools, ready
    named = [line.split(" queues ", 1)[1].split(", ", 1)[0] for line in ready]
    served = {queue for queues in named for queue in queues.split(",")}
    assert served == {q.value for q in Queue}, ready
    dev.service.stop()


def test_a_second_dev_on_the_same_data_dir_refuses_to_start(
    tmp_path: Path, numba_cache: Path
) -> None:
    data_dir = tmp_path / "var"
    first = start_dev(tmp_path, data_dir, numba_cache, "first")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "earshot", "dev", "--port", str(free_port())],
            cwd=REPO,
            env=service_env(data_dir, numba_cache),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert f"another earshot dev (pid {first.pid}) is using {data_dir.resolve()}" in (
            second.stderr
        )
        # The first one serves on, untouched.
        assert httpx.get(f"http://127.0.0.1:{first.port}/healthz", timeout=5).status_code == 200
        first.service.assert_alive()
    finally:
        assert first.service.stop(signal.SIGTERM) == 0, first.service.log()[-4000:]


def test_restart_after_sigkill_finishes_the_job_it_was_running(
    tmp_path: Path, numba_cache: Path
) -> None:
    data_dir = tmp_path / "var"
    first = start_dev(tmp_path, data_dir, numba_cache, "first")
    runtime: Runtime = build_runtime(Settings(data_dir=data_dir))
    try:
        # Long enough to be caught mid-analysis, short enough not to be split into chunks.
        clip = make_long_wav(tmp_path / "long.wav", seconds=1150.0)
        job = submit_file(runtime, clip)
        wait_for(
            lambda: runtime.jobs.get(job.id).percent > 0.0,
            what=f"job {job.id} to be under way",
        )
        tree = descendants(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        wait_gone(tree, first)
        first.service.stop()
        assert runtime.jobs.get(job.id).status is JobStatus.RUNNING  # killed mid-analysis

        second = start_dev(tmp_path, data_dir, numba_cache, "second")
        try:
            done = wait_finished(runtime, job.id, services=(second.service,))
            assert done.status is JobStatus.SUCCEEDED, (done.error_code, done.error_message)
            assert done.attempts == 2  # the killed delivery and the re-queued one
            assert "re-queued 1 job(s)" in second.service.log()
            document = json.loads(runtime.blobs.get_bytes((done.result_prefix or "") + RESULT_JSON))
            assert document["audio"]["duration_s"] == pytest.approx(1150.0, abs=0.1)
        finally:
            assert second.service.stop(signal.SIGTERM) == 0, second.service.log()[-4000:]
    finally:
        runtime.close()
