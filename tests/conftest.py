"""Fixtures shared by every test package. Keep this small; package fixtures live beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests that need noise get the same noise every run."""
    return np.random.default_rng(20240601)


@pytest.fixture
def samples_dir() -> Path:
    """The committed, synthesized sample clips (see samples/README.md)."""
    return SAMPLES_DIR
