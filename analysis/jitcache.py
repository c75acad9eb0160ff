"""What librosa's numba kernels cost per process and per call, paid once.

librosa 1.0 declares the beat tracker's local score (``librosa.beat.__beat_local_score``, a
``guvectorize``) with ``cache=False``: every process that tracks beats paid ~2.4 s of JIT for
it, in each worker pool's warm-up and in every ``earshot analyze`` run, while every other
kernel loads from numba's cache in milliseconds. The same Python function with the same
options, built with ``cache=True``, compiles to the same code; only where it comes from
changes.
"""

from __future__ import annotations

import functools
from typing import Any

import librosa.beat
import numba
from numba.np.ufunc import gufunc as gufunc_module
from numba.np.ufunc.gufunc import GUFunc

# Module-level names in librosa.beat (not mangled: they are not class attributes).
_UNCACHED_GUFUNCS = ("__beat_local_score",)


def cache_librosa_kernels() -> None:
    """Swap each of librosa's uncached gufuncs for a cached build of the same function, and
    parse each gufunc's layout once (`memoize_gufunc_layouts`).

    Safe to call more than once; a librosa whose kernel is already cached, renamed or no
    longer a gufunc is left alone.
    """
    memoize_gufunc_layouts()
    for name in _UNCACHED_GUFUNCS:
        current = vars(librosa.beat).get(name)
        if not isinstance(current, GUFunc) or getattr(current, "earshot_cached", False):
            continue
        builder: Any = getattr(current, "gufunc_builder", None)
        if builder is None:
            continue
        if builder.cache:
            continue  # a librosa that caches it itself
        cached = numba.guvectorize(current.signature, cache=True, **builder.targetoptions)(
            builder.py_func
        )
        cached.earshot_cached = True
        setattr(librosa.beat, name, cached)


def memoize_gufunc_layouts() -> None:
    """Parse a gufunc's layout string (``"(t),(n)->(t)"``) once instead of at every call.

    numba parses it with Python's tokenizer on every call of a dynamic gufunc, twice when it
    checks the arguments: librosa's beat tracker, peak picking and local maxima make ~7 such
    calls per analysis, ~1.3 ms each (cProfile of a 5-second clip: 9 of its ~90 ms, the same
    for a 5-minute file). The parse is a pure function of the string; the memo hands back
    tuples, which its readers (lengths, iteration) treat as the lists it built.
    """
    # numba's stubs do not declare the module's imported names.
    module: Any = gufunc_module
    if getattr(module.parse_signature, "earshot_memo", False):
        return
    parse = module.parse_signature

    @functools.lru_cache(maxsize=256)
    def parse_once(signature: str) -> tuple[tuple[tuple[str, ...], ...], ...]:
        return tuple(tuple(tuple(dims) for dims in side) for side in parse(signature))

    parse_once.earshot_memo = True  # type: ignore[attr-defined]
    module.parse_signature = parse_once
