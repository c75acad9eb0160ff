"""What a long file's analysis computes piecewise, to hold no float64 copy of a whole (k, frames)
matrix, is bit for bit what the whole-array arithmetic it replaced gives: the results of
earshot's analysis must not change (analyzer_version) for a smaller peak of memory.

Each case is checked against numpy's own whole-array computation, bit for bit, on sizes that
fall on and across the pieces' edges.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.features import segment_sums
from analysis.tonal import _mean_profile, _RunningSums


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a.view(np.uint8), b.view(np.uint8))
    )


@pytest.fixture
def profile(rng: np.random.Generator) -> np.ndarray:
    # Like an hour's pitch-class profile: float32, non-negative, many frames.
    return rng.random((12, 20_011)).astype(np.float32) ** 3


@pytest.mark.parametrize("block", [1, 7, 4096, 20_011, 50_000])
def test_running_sums_are_numpys_cumulative_sums(
    profile: np.ndarray, rng: np.random.Generator, block: int
):
    n = profile.shape[1]
    whole = np.concatenate([np.zeros((12, 1)), np.cumsum(profile, axis=1, dtype=np.float64)], 1)
    frames = np.concatenate([[0, 1, n - 1, n], rng.integers(0, n + 1, 300)])
    if block < n:
        frames = np.concatenate([frames, np.arange(block - 1, n, block)[:50]])
    assert _same_bits(_RunningSums(profile, block).at(frames), whole[:, frames])


def test_mean_profiles_are_numpys_float64_means(profile: np.ndarray):
    whole = profile.astype(np.float64)
    assert _same_bits(_mean_profile(profile), whole.mean(axis=1))
    for a, b in [(0, 1), (5, 4_100), (10_000, 20_011), (3, 3 + 8_192 * 2 + 1)]:
        assert _same_bits(_mean_profile(profile, a, b), whole[:, a:b].mean(axis=1))


def test_segment_sums_are_numpys_reduceat(profile: np.ndarray, rng: np.random.Generator):
    starts = np.unique(np.concatenate([[0], rng.integers(1, profile.shape[1], 400)]))
    whole = np.add.reduceat(profile.astype(np.float64), starts, axis=1)
    assert _same_bits(segment_sums(profile, starts), whole)
    assert _same_bits(segment_sums(profile[:5], starts), whole[:5])
