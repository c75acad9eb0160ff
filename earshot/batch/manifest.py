"""``manifest.jsonl``: what a batch did to each input, so a second run resumes, not resends."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, Any

from earshot.client.files import atomic_writer

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    """``manifest.jsonl``: one JSON record per line, appended; the latest record per path wins.

    Every append is one ``write`` of a whole line followed by fsync, so an interruption leaves
    at worst a torn last line, which loading ignores. ``compact`` rewrites the file with one
    record per path through a rename.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path.exists():
            self.records = self.load(path)

    @staticmethod
    def load(path: Path) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn by an interruption mid-write
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    records[record["path"]] = record
        return records

    def get(self, rel: str) -> dict[str, Any] | None:
        with self._lock:
            return self.records.get(rel)

    def open(self) -> None:
        # Compacting first also drops a torn last line, so appends start on a fresh line.
        self.compact()
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError("manifest is not open")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.records[record["path"]] = record

    def compact(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
            with atomic_writer(self.path) as fh:
                for rel in sorted(self.records):
                    fh.write(json.dumps(self.records[rel], sort_keys=True) + "\n")
            if self._fh is not None:
                self._fh = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
