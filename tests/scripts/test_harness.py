"""scripts/bench/harness.py, the child-process harness of the benchmarks and tests/integration.

The truth is taken from outside the harness: the kernel's process table (/proc) for what is
still running, the child's own exit code and log for why it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from scripts.bench import harness

REPO = Path(__file__).resolve().parents[2]
BOUND_S = 120.0


def group_members(pgid: int) -> list[int]:
    """Pids of live processes whose process group is ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_child_that_exits_is_reported_with_its_code_and_log(tmp_path: Path) -> None:
    env = harness.child_env(tmp_path / "var", tmp_path / "numba", code=REPO)
    child = harness.Child(["no-such-command"], env=env, log_path=tmp_path / "child.log")
    try:
        # Not the timeout: the wait ends as soon as the child is seen dead.
        with pytest.raises(harness.ChildExited) as caught:
            child.wait_worker_ready(timeout=BOUND_S)
    finally:
        code = child.stop()
    assert code == 2  # argparse's exit status for a bad command line
    assert "exited with 2" in str(caught.value)
    assert "invalid choice: 'no-such-command'" in str(caught.value)


def test_stop_leaves_no_process_of_the_group(tmp_path: Path) -> None:
    port = harness.free_port()
    env = harness.child_env(tmp_path / "var", tmp_path / "numba", code=REPO)
    harness.run_earshot(["migrate"], env=env)
    child = harness.Child(["serve", "--port", str(port)], env=env, log_path=tmp_path / "serve.log")
    try:
        assert os.getpgid(child.pid) == child.pid  # its own process group

        def healthy() -> bool:
            child.check_alive()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
            except httpx.HTTPError:
                return False

        harness.wait_for(healthy, what="/healthz", timeout=BOUND_S)
        assert harness.port_open(port)
        assert child.pid in group_members(child.pid)
    finally:
        child.stop()
    assert group_members(child.pid) == []
    assert not harness.port_open(port)
