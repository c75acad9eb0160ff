"""librosa's uncached beat-tracking kernel, swapped for a cached build of the same function."""

from __future__ import annotations

import librosa.beat
import numba
import numpy as np

import analysis.analyze  # noqa: F401 - importing the analysis swaps the kernel
from analysis.jitcache import cache_librosa_kernels

NAME = "__beat_local_score"


def test_the_kernel_is_cached_and_computes_what_librosa_s_own_build_does() -> None:
    kernel = vars(librosa.beat)[NAME]
    assert kernel.gufunc_builder.cache is True
    # librosa's declaration, built as librosa builds it (cache=False), is the reference.
    reference = numba.guvectorize("(t),(n)->(t)", nopython=True, cache=False)(
        kernel.gufunc_builder.py_func
    )
    onsets = np.random.default_rng(0).random(2000)
    for frames_per_beat in (np.array([43.0]), np.full(2000, 37.0)):
        ours, theirs = np.empty_like(onsets), np.empty_like(onsets)
        kernel(onsets, frames_per_beat, ours)
        reference(onsets, frames_per_beat, theirs)
        assert np.array_equal(ours, theirs)


def test_swapping_twice_keeps_the_first_swap() -> None:
    kernel = vars(librosa.beat)[NAME]
    cache_librosa_kernels()
    assert vars(librosa.beat)[NAME] is kernel
