"""Wake a waiting consumer of the ``filesystem://`` broker when there is something to take.

kombu's filesystem transport finds messages by listing their folder, and sleeps its polling
interval (20 ms here) between empty listings: on average half an interval between a publish and
its pickup, and again between a task's end and the next delivery, on every short job. Linux
reports a file moved into a folder through inotify, so a consumer can sleep until a message
arrives instead; an acknowledgement (the pool took its next message's slot back) wakes it
through a pipe. Elsewhere, or when inotify is unavailable (its watch limit reached), waiting
falls back to sleeping the interval: the same behaviour as kombu's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import sys
import time

log = logging.getLogger(__name__)

# inotify(7)'s event of a file renamed into the folder: how a message appears (written under
# another name first, core.broker.AtomicFilesystemChannel._put), so one event per message.
IN_MOVED_TO = 0x00000080
_READ_SIZE = 64 * 1024


def _inotify_fd(folder: str) -> int | None:
    """A non-blocking inotify descriptor watching ``folder``, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        watch = libc.inotify_add_watch(fd, os.fsencode(folder), IN_MOVED_TO)
        if watch < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, os.strerror(err))
    except (OSError, AttributeError) as exc:
        log.info("no inotify on %s (%s): the broker folder is polled", folder, exc)
        return None
    return fd


class Wakeup:
    """``wait(timeout)`` until a file lands in ``folder``, ``wake()`` is called, or ``timeout``.

    Returns True when woken early. Both descriptors are drained on every wake, so one event
    wakes one wait; a message that arrived between two waits is found by the listing the
    caller does before it waits again.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._pid = os.getpid()
        self._inotify = _inotify_fd(folder)
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def watching(self) -> bool:
        """Whether arrivals wake a wait (inotify), rather than only ``wake()`` and the timeout."""
        return self._inotify is not None

    def wake(self) -> None:
        """Wake the current (or the next) ``wait``; safe from any thread."""
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> bool:
        if os.getpid() != self._pid:
            # A forked child does not own these descriptors' events: it only sleeps.
            time.sleep(timeout)
            return False
        fds = [self._read] if self._inotify is None else [self._read, self._inotify]
        ready, _, _ = select.select(fds, [], [], timeout)
        for fd in ready:
            with contextlib.suppress(BlockingIOError):  # drained
                while os.read(fd, _READ_SIZE):
                    pass
        return bool(ready)

    def close(self) -> None:
        for fd in (self._read, self._write, self._inotify):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._inotify = None
