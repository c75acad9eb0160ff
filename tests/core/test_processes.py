"""core.processes with real processes: the data dir lock, death with the parent, the memory cap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import DataDirBusy
from core.processes import DEV_LOCK_FILE, lock_data_dir, release_data_dir

REPO = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl/rlimit")


def python(code: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_until(probe: object, *, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path / "var")
    try:
        assert (tmp_path / "var" / DEV_LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}\\) is using {tmp_path}/var"):
            lock_data_dir(tmp_path / "var")
    finally:
        release_data_dir(lock)
    release_data_dir(lock_data_dir(tmp_path / "var"))  # free again once released


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    holder = python(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from core.processes import lock_data_dir\n"
        f"lock = lock_data_dir(Path({str(tmp_path / 'var')!r}))\n"
        "print('locked', flush=True)\n"
        "time.sleep(300)\n"
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirBusy, match=f"pid {holder.pid}\\)"):
            lock_data_dir(tmp_path / "var")
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    # Killed without a chance to clean up: the kernel dropped the lock, nothing is stale.
    release_data_dir(lock_data_dir(tmp_path / "var"))


@linux_only
def test_a_child_dies_with_its_parent() -> None:
    parent = python(
        "import os, signal, subprocess, sys, time\n"
        "from core.processes import die_with_parent\n"
        "me = os.getpid()\n"
        "child = subprocess.Popen(['sleep', '300'],\n"
        "    preexec_fn=lambda: die_with_parent(signal.SIGKILL, parent_pid=me))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n",
        start_new_session=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert not gone(child)
        parent.kill()  # SIGKILL: the parent cannot stop its child itself
        parent.communicate(timeout=30)
        assert wait_until(lambda: gone(child)), f"child {child} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate(timeout=30)
        if not gone(child):
            os.kill(child, signal.SIGKILL)


@linux_only
def test_the_memory_cap_refuses_an_allocation_past_it() -> None:
    capped = python(
        "import numpy as np\n"
        "from core.processes import limit_memory, private_memory_mb\n"
        "held = private_memory_mb()\n"
        "assert limit_memory(held + 64)\n"
        "small = np.ones(4 * 2**20 // 8)  # 4 MB: fits\n"
        "try:\n"
        "    np.ones(256 * 2**20 // 8)  # 256 MB: does not\n"
        "except MemoryError:\n"
        "    print('refused', held, flush=True)\n"
        "else:\n"
        "    print('allowed', flush=True)\n"
    )
    out, err = capped.communicate(timeout=60)
    assert capped.returncode == 0, err
    assert out.split()[0] == "refused", out
    # The cap is the process's own: this process can still take the same 256 MB.
    import numpy as np

    assert np.ones(256 * 2**20 // 8).nbytes == 256 * 2**20
