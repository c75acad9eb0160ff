"""Fixtures shared by every test package. Keep this small; package fixtures live beside them."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from earshot.service_cmd import INSTALL_NUMBA_CACHE

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


def seed_numba_cache(target: Path) -> Path:
    """Fill ``target`` with a copy of the numba cache `make install` warmed (if there is one).

    numba keys each entry by its source file's path and stamp, so the copy serves this
    checkout's code as it was at install and recompiles only what changed since. Each user
    gets a copy rather than the installed folder itself: processes that compile into one
    folder at the same time have crashed in numba (see earshot.service_cmd.warm_up).
    """
    target.mkdir(parents=True, exist_ok=True)
    if INSTALL_NUMBA_CACHE.is_dir():
        shutil.copytree(
            INSTALL_NUMBA_CACHE,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("*.lock"),
        )
    return target


# This test process's own JIT cache, set before any test module imports numba: without it
# numba compiles librosa's and the analysis's kernels afresh into the source folders (~12 s
# in the first test that analyses anything on a fresh clone), and shares those folders with
# every child process started without NUMBA_CACHE_DIR.
if "NUMBA_CACHE_DIR" not in os.environ:
    _own_cache = Path(tempfile.mkdtemp(prefix="earshot-test-numba-"))
    atexit.register(shutil.rmtree, _own_cache, ignore_errors=True)
    os.environ["NUMBA_CACHE_DIR"] = str(seed_numba_cache(_own_cache))


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests that need noise get the same noise every run."""
    return np.random.default_rng(20240601)


@pytest.fixture
def samples_dir() -> Path:
    """The committed, synthesized sample clips (see samples/README.md)."""
    return SAMPLES_DIR
