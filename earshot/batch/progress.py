"""What a batch tells its user: a progress bar, plain lines, or JSON Lines events."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any


class Reporter:
    """Tells the user what happens: a progress bar on a TTY, plain lines otherwise, and JSON
    Lines events on stdout with ``--json``. Thread-safe."""

    def __init__(self, *, total: int, json_lines: bool, stream: IO[str] | None = None) -> None:
        self.total = total
        self.json_lines = json_lines
        self.err = stream or sys.stderr
        self.human = self.err if json_lines else sys.stdout
        self.bar = self.err.isatty()
        self.counts = {"uploaded": 0, "succeeded": 0, "failed": 0, "skipped": 0}
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._bar_shown = False
        self._finished = False

    def event(self, kind: str, text: str | None = None, /, **data: Any) -> None:
        with self._lock:
            if kind in self.counts:
                self.counts[kind] += 1
            if self.json_lines:
                record = {"event": kind, **data}
                sys.stdout.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                sys.stdout.flush()
            if text is not None:
                # stdout and stderr share the terminal: the bar goes before any line is printed.
                self._clear_bar()
                if not self.bar or kind in ("failed", "ignored", "note", "done", "retry"):
                    self.human.write(text + "\n")
                    self.human.flush()
            if self.bar and not self._finished:
                self._draw()

    def line(self) -> str:
        c = self.counts
        finished = c["succeeded"] + c["failed"] + c["skipped"]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done_here = c["succeeded"] + c["failed"]
        rate = done_here / elapsed
        remaining = self.total - finished
        eta = _clock(remaining / rate) if rate > 0 and remaining > 0 else "--:--"
        width = 20
        filled = int(width * finished / self.total) if self.total else width
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} "
            f"uploaded {c['uploaded']} analysed {c['succeeded']} failed {c['failed']} "
            f"skipped {c['skipped']}  {rate * 60:.1f} files/min  ETA {eta}"
        )

    def tick(self) -> None:
        if self.bar and not self._finished:
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        self.err.write("\r\x1b[2K" + self.line())
        self.err.flush()
        self._bar_shown = True

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.err.write("\r\x1b[2K")
            self.err.flush()
            self._bar_shown = False

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            if self.bar and self._bar_shown:
                self.err.write("\n")
                self.err.flush()
                self._bar_shown = False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
