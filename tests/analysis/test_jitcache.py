"""librosa's uncached beat-tracking kernel, swapped for a cached build of the same function."""

from __future__ import annotations

import librosa.beat
import librosa.util
import numba
import numpy as np
import pytest

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


def test_a_dynamic_gufunc_is_typed_once_per_argument_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a first call with some argument dtypes, librosa's gufuncs go to numpy at once
    (numba's per-call typing was ~0.1 ms of Python a call); the answers stay numba's own, and
    a new dtype still gets its loop compiled."""
    from numba.np.ufunc.gufunc import GUFunc

    numba_call = GUFunc.__call__.__wrapped__  # type: ignore[attr-defined]
    typed: list[object] = []
    real_typing = GUFunc._get_ewise_dtypes

    def counting(self: GUFunc, args: object) -> object:
        typed.append(args)
        return real_typing(self, args)

    monkeypatch.setattr(GUFunc, "_get_ewise_dtypes", counting)
    # A local-maximum kernel of its own (not librosa's, whose loops earlier tests compiled).
    kernel = numba.guvectorize("(n)->(n)", nopython=True)(_peaks)
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64, np.int64):
        x = (rng.random(300) * 100).astype(dtype)
        # Independent truth: x[i] above its left neighbour and not below its right one.
        expected = np.zeros(x.size, bool)
        expected[1:-1] = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:])
        first, again = np.empty(x.size, bool), np.empty(x.size, bool)
        kernel(x, first)
        typed_before = len(typed)
        for _ in range(3):
            kernel(x, again)
        assert len(typed) == typed_before  # typed on the first call of each dtype only
        theirs = np.empty(x.size, bool)
        numba_call(kernel, x, theirs)
        assert np.array_equal(first, expected)
        assert np.array_equal(again, expected) and np.array_equal(theirs, expected)
    # librosa's own, through the memo: the same peaks.
    x = rng.random(500)
    assert np.array_equal(librosa.util.localmax(x)[1:-1], (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:]))


def _peaks(x, y):  # type: ignore[no-untyped-def]  # numba compiles it
    y[0] = False
    y[-1] = False
    for i in range(1, x.shape[0] - 1):
        y[i] = x[i] > x[i - 1] and x[i] >= x[i + 1]
