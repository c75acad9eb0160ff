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

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import struct
import sys
import threading
import time
import weakref
from pathlib import Path

from core.names import JobStatus

log = logging.getLogger(__name__)

# inotify(7)'s event of a file renamed into the folder: how a message appears (written under
# another name first, core.broker.AtomicFilesystemChannel._put), so one event per message.
IN_MOVED_TO = 0x00000080
# A file opened for writing was closed: how the embedded store announces a job's status change
# (``announce_status_change``), whether or not the file existed.
IN_CLOSE_WRITE = 0x00000008
_EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name
_READ_SIZE = 64 * 1024


def _inotify_fd(folder: str, mask: int = IN_MOVED_TO) -> int | None:
    """A non-blocking inotify descriptor watching ``folder`` for ``mask``, or None where there
    is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        watch = libc.inotify_add_watch(fd, os.fsencode(folder), mask)
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


def _names(data: bytes) -> set[str]:
    """The file names in a buffer of inotify events."""
    names: set[str] = set()
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        _wd, _mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        start = offset + _EVENT_HEADER.size
        names.add(data[start : start + length].rstrip(b"\0").decode(errors="replace"))
        offset = start + length
    return names


def status_folder(database: Path) -> Path:
    """The folder in which the embedded store at ``database`` announces status changes."""
    return database.with_name(database.name + ".status")


# The statuses that end a job: a waiter that only wants a job's end
# (``mark(job_id, finished_only=True)``) is not woken by the others.
FINISHED_STATUSES = frozenset(status.value for status in JobStatus if status.finished)


def change_note(job_id: str, status: str | None) -> str:
    """How a status change is named to the waiters: the job's id, then ``:`` and the new
    status when it is known (the file name of the embedded store's announcement, the payload
    of PostgreSQL's NOTIFY)."""
    return job_id if status is None else f"{job_id}:{status}"


def parse_change_note(note: str) -> tuple[str, str | None]:
    """``(job_id, status)`` of a ``change_note``; status None when the note has none (an
    older writer's note: the job's id alone)."""
    job_id, _, status = note.partition(":")
    return job_id, status or None


def announce_status_change(folder: Path, job_id: str, status: str | None = None) -> None:
    """Tell the API's held status requests on the embedded store that ``job_id``'s status
    changed (to ``status``, when given; called after the change is committed): a file named
    ``change_note(job_id, status)`` is written in ``folder`` and removed. Never raises: a
    waiter still finds the change when it polls.
    """
    if not job_id or "/" in job_id or job_id.startswith(".") or ":" in job_id:
        return
    path = folder / change_note(job_id, status)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.unlink(path)
    except FileNotFoundError:
        pass  # another process announced the same job at the same moment and removed it
    except OSError as exc:
        log.debug("status change of job %s not announced: %s", job_id, exc)


class _Changes:
    """What both change feeds share: waiters take an event (``mark``) before reading their
    job, then ``wait`` on it. The event of a job is set when that job's status changes; the
    event of a waiter that follows no job is set on every change. A waiter that wants the
    job's end alone (``finished_only``) is woken by a change to a finished status, or to one
    the change does not name; a job that merely starts leaves it waiting, unread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        # The event of each job someone waits on; gone when its last waiter is.
        self._jobs: weakref.WeakValueDictionary[str, asyncio.Event] = weakref.WeakValueDictionary()
        self._ends: weakref.WeakValueDictionary[str, asyncio.Event] = weakref.WeakValueDictionary()

    def _fire(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _fire_jobs(self, notes: set[str]) -> None:
        """Wake the waiters of each job named in ``notes`` (``change_note``s)."""
        for note in notes:
            job_id, status = parse_change_note(note)
            woken = [self._jobs]
            if status is None or status in FINISHED_STATUSES:
                woken.append(self._ends)
            for events in woken:
                event = events.pop(job_id, None)
                if event is not None:
                    event.set()
        self._fire()

    def _start(self) -> None:
        """Begin watching (called by the first ``mark``, on the event loop)."""

    def mark(self, job_id: str | None = None, *, finished_only: bool = False) -> asyncio.Event:
        """Now, as something to ``wait`` on: take it before reading the job, so a change that
        lands between the read and the wait still wakes the waiter. ``job_id`` names the job
        the waiter follows: only a change of that job wakes it; with ``finished_only``, only
        one that may have ended it."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._start()
        if job_id is None:
            return self._changed
        events = self._ends if finished_only else self._jobs
        event = events.get(job_id)
        if event is None:
            event = events[job_id] = asyncio.Event()
        return event

    async def wait(self, mark: asyncio.Event, timeout: float) -> bool:
        """Whether something changed after ``mark`` and before ``timeout`` seconds."""
        try:
            await asyncio.wait_for(mark.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def changed(self, timeout: float) -> bool:
        """Whether something changed before ``timeout`` seconds passed."""
        return await self.wait(self.mark(), timeout)


class DatabaseChanges(_Changes):
    """``await changed(timeout)``: until a job's status changes in the embedded SQLite store at
    ``path`` (by any process: a worker claiming or finishing a job), or ``timeout``.

    For the API's held status requests (``GET /v1/analyses/{id}?wait=``) on the embedded
    store: they re-read their job when its status changed instead of every few milliseconds.
    The store announces each change with a file named ``<job id>:<new status>``
    (``change_note``) in ``status_folder(path)`` (``announce_status_change``); one inotify
    watch on that folder, read by the event loop, wakes the waiters of that job. Watching the
    database file itself woke every waiter on every write, each to re-read its row: with four
    clients, four reads where one does.
    ``available`` is False where inotify is not (then waiters only time out, and poll).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        folder = status_folder(path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.info("no status folder %s (%s): held requests poll", folder, exc)
            self._fd: int | None = None
        else:
            self._fd = _inotify_fd(str(folder), IN_CLOSE_WRITE)

    @property
    def available(self) -> bool:
        return self._fd is not None

    def _on_readable(self) -> None:
        assert self._fd is not None
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._fd, _READ_SIZE):
                data += chunk
        if names := _names(data):
            self._fire_jobs(names)

    def _start(self) -> None:
        if self._fd is not None:
            assert self._loop is not None
            self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        if self._fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class PostgresChanges(_Changes):
    """``DatabaseChanges`` for the PostgreSQL job store: wakes when a job's status changes.

    ``JobStore`` sends ``NOTIFY`` on ``channel`` in the transaction of every status change, with
    ``<job id>:<new status>`` as payload (``change_note``); one thread per API process holds a
    connection that LISTENs and wakes the waiters that follow that job (``mark(job_id)``),
    and those that follow none. Waking every waiter on every change made each held request
    re-read its row for every other job's change too: with four clients following their jobs,
    four reads per change where one does. Started by the first ``mark``.
    ``available`` is True while that connection listens; when it is down (PostgreSQL
    restarting), it reconnects every second and held requests poll meanwhile.
    """

    def __init__(self, url: str, channel: str) -> None:
        """``url``: the job store's SQLAlchemy URL (``postgresql+psycopg://…``)."""
        from sqlalchemy.engine import make_url

        super().__init__()
        plain = make_url(url).set(drivername="postgresql")
        self._conninfo = plain.render_as_string(hide_password=False)
        self._channel = channel
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._listening.is_set()

    def _listen(self) -> None:
        import psycopg

        from core.database import DATABASE_TCP_OPTIONS

        while not self._stop.is_set():
            try:
                # The job store's own keepalives and timeouts: a listener cut off by a partition
                # breaks (and held requests poll) instead of waiting for news that cannot come.
                with psycopg.connect(
                    self._conninfo, autocommit=True, **DATABASE_TCP_OPTIONS
                ) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self._listening.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            assert self._loop is not None
                            self._loop.call_soon_threadsafe(self._fire_jobs, {notify.payload})
            except (psycopg.Error, OSError) as exc:
                if self._listening.is_set():
                    log.warning("job status notifications interrupted: %s", exc)
            except RuntimeError:
                return  # the event loop closed under us: the API is stopping
            finally:
                self._listening.clear()
            self._stop.wait(1.0)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="earshot-job-status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
