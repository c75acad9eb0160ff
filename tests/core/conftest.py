"""Fixtures of the core tests: a real runtime on the embedded defaults (SQLite, local disk)."""

from tests.tasks.conftest import runtime, wav_bytes

__all__ = ["runtime", "wav_bytes"]
