"""What a command shows on a terminal while it works, and how it ends when its reader goes away."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from typing import IO

# The exit status of a process killed by SIGPIPE, as a shell reports it (128 + 13): what
# `earshot … | head` returns once head has read enough, like any other command in a pipe.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def silence_broken_pipe() -> int:
    """Point stdout and stderr at /dev/null after a reader closed the pipe; the exit status.

    The interpreter flushes stdout again at exit, and that flush would print a second
    BrokenPipeError ("Exception ignored ...") to stderr; with both streams on /dev/null the
    command ends as quietly as one killed by SIGPIPE.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        # A stream that is no real file (captured by a test) has nothing to flush at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


class ProgressLine:
    """One status line on stderr, redrawn in place while a file is analysed; terminals only.

    Called as the analysis's ``progress(stage, fraction)`` callback. Nothing is written when
    the stream is not a terminal, so logs and pipes never see carriage returns. Redraws are
    at most every ``interval`` seconds: a long file's progress callback fires per block.
    """

    def __init__(self, stream: IO[str] | None = None, *, interval: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.interval = interval
        self.label = ""
        self._started = 0.0
        self._drawn_at: float | None = None

    def start(self, label: str) -> None:
        """A new file: ``label`` leads the line (e.g. ``[2/18] music/01.flac``)."""
        self.clear()
        self.label = label
        self._started = time.monotonic()

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._drawn_at is not None and now - self._drawn_at < self.interval:
            return
        elapsed = now - self._started
        status = f"  {stage} {100 * fraction:3.0f}%  {_clock(elapsed)}"
        # Before 5 % an estimate of what is left swings too far to be worth reading.
        if 0.05 <= fraction < 1.0:
            status += f", ~{_clock(elapsed * (1 - fraction) / fraction)} left"
        # A line wider than the terminal wraps, and "\r" then redraws only its last part: a
        # long path gives way from its start, so the stage and the percentage stay in view.
        room = max(self._columns() - 1 - len(status), 8)
        label = self.label if len(self.label) <= room else "…" + self.label[-(room - 1) :]
        self.stream.write("\r\x1b[2K" + label + status)
        self.stream.flush()
        self._drawn_at = now

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        # A terminal that reports no size (a fresh pseudo-terminal) gets the usual 80.
        return columns or shutil.get_terminal_size().columns

    def clear(self) -> None:
        """Erase the line (before a result or an error is printed, and at the end)."""
        if self._drawn_at is not None:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn_at = None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
