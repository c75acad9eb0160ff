"""Process lifecycle: children that die with their parent, one ``earshot dev`` per data dir, and
a hard memory bound on each worker pool process.

``earshot dev`` starts the API and its worker pools in their own sessions (so Ctrl-C reaches
only the parent, which stops them in order). Without more, a parent killed by SIGKILL or an
out-of-memory kill orphans them: they keep serving the port and analysing jobs that a
restarted ``earshot dev`` re-queues as lost. Linux's ``PR_SET_PDEATHSIG`` makes the kernel
signal a child when its parent dies; on other systems the lock below still keeps a second
``earshot dev`` off the data dir while any of the first one's processes live.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import IO

from core.errors import DataDirBusy

log = logging.getLogger(__name__)

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1

# Loaded at import, not in the child: a ``preexec_fn`` runs between fork and exec, where
# loading a library could wait forever on a lock another thread of the parent held at fork.
LIBC: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        LIBC = ctypes.CDLL(None, use_errno=True)

# The lock file ``earshot dev`` holds in its data dir for as long as it (or a child) runs.
DEV_LOCK_FILE = "earshot-dev.lock"


def die_with_parent(sig: int = signal.SIGKILL, *, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; False if it can't.

    Meant for a child right after ``fork`` (a ``preexec_fn``, Celery's ``worker_process_init``).
    ``parent_pid`` closes the race of a parent that died before the request was made: the
    process is then already an orphan and exits at once. Linux only; elsewhere a no-op.
    """
    if LIBC is None:
        return False
    try:
        if LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except AttributeError:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
    return True


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take ``earshot dev``'s exclusive lock on ``data_dir``; the open file holds it.

    Raises :class:`DataDirBusy` (naming the holder's pid) when another process holds it. The
    lock is an ``flock`` on an open file, released by the kernel when the last process holding
    that file (this one, and any child it was passed to) is gone: a crash never leaves it stale.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_LOCK_FILE
    lock = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DataDirBusy(
            f"another earshot dev (pid {holder}) is using {data_dir.resolve()}; stop it first "
            f"(or point EARSHOT_DATA_DIR elsewhere)"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def release_data_dir(lock: IO[str]) -> None:
    """Give up the lock taken by :func:`lock_data_dir`."""
    with contextlib.suppress(OSError):
        fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


def private_memory_mb() -> int | None:
    """This process's private writable memory (``VmData``, what RLIMIT_DATA counts), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def limit_memory(max_mb: int) -> bool:
    """Cap this process's private writable memory at ``max_mb`` MB; False if not supported.

    Why RLIMIT_DATA, measured on Linux 6.x with a warmed-up pool process (numba, librosa,
    OpenBLAS loaded): its address space (VmSize, what RLIMIT_AS counts) is already ~830 MB,
    mostly reservations that never hold memory, so an address-space cap says little about
    memory. RLIMIT_DATA (Linux >= 4.7) counts private writable mappings, heap and anonymous
    mmap alike (the same process: ~465 MB), and makes the allocation that would cross it fail
    at once: numpy raises MemoryError, which the task body turns into ``memory_exceeded``. An
    RSS watchdog thread was the alternative: it needs the GIL to sample, so a long
    GIL-holding call (numba, some numpy) allocates past it unseen, and it can only react after
    the memory is taken.
    """
    if not sys.platform.startswith("linux"):
        return False
    limit = max_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        return False
    return True


def bound_pool_process(*, max_memory_mb: int) -> None:
    """Run in each worker pool process as it starts (Celery's ``worker_process_init``).

    The pool process dies with its worker (a SIGKILLed worker otherwise leaves it finishing
    its analysis as an orphan), and its memory is capped (see :func:`limit_memory`).
    """
    die_with_parent(signal.SIGKILL)
    baseline = private_memory_mb()
    if not limit_memory(max_memory_mb):
        log.warning("no hard memory limit on this platform; only the after-task RSS check")
        return
    if baseline is not None and baseline >= max_memory_mb:
        log.error(
            "this worker process already holds %d MB of private memory, at or above "
            "EARSHOT_WORKER_MAX_MEMORY_MB=%d: every task will fail memory_exceeded; raise it",
            baseline,
            max_memory_mb,
        )
    else:
        log.info(
            "worker process memory capped at %d MB (EARSHOT_WORKER_MAX_MEMORY_MB); %s MB held "
            "at start",
            max_memory_mb,
            baseline,
        )
