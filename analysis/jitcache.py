"""librosa's numba kernels that librosa compiles again in every process, compiled once and
cached on disk like the rest.

librosa 1.0 declares the beat tracker's local score (``librosa.beat.__beat_local_score``, a
``guvectorize``) with ``cache=False``: every process that tracks beats paid ~2.4 s of JIT for
it, in each worker pool's warm-up and in every ``earshot analyze`` run, while every other
kernel loads from numba's cache in milliseconds. The same Python function with the same
options, built with ``cache=True``, compiles to the same code; only where it comes from
changes.
"""

from __future__ import annotations

from typing import Any

import librosa.beat
import numba
from numba.np.ufunc.gufunc import GUFunc

# Module-level names in librosa.beat (not mangled: they are not class attributes).
_UNCACHED_GUFUNCS = ("__beat_local_score",)


def cache_librosa_kernels() -> None:
    """Swap each of librosa's uncached gufuncs for a cached build of the same function.

    Safe to call more than once; a librosa whose kernel is already cached, renamed or no
    longer a gufunc is left alone.
    """
    for name in _UNCACHED_GUFUNCS:
        current = vars(librosa.beat).get(name)
        if not isinstance(current, GUFunc) or getattr(current, "_earshot_cached", False):
            continue
        builder: Any = getattr(current, "gufunc_builder", None)
        if builder is None:
            continue
        if builder.cache:
            continue  # a librosa that caches it itself
        cached = numba.guvectorize(current.signature, cache=True, **builder.targetoptions)(
            builder.py_func
        )
        cached._earshot_cached = True
        setattr(librosa.beat, name, cached)
