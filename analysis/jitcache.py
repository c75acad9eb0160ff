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
import numpy as np
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
    memoize_gufunc_dispatch()
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


def memoize_gufunc_dispatch() -> None:
    """Resolve a dynamic gufunc's element types once per combination of argument types.

    At every call of a dynamic gufunc (librosa's beat tracker, peak picking, local maxima)
    numba types each argument (``typeof``), looks for a compiled loop that matches, compiles
    one if none does, and then calls the underlying numpy gufunc with the same arguments:
    ~0.1 ms of Python per call, ~0.5 ms of a 5-second clip's analysis. Once a combination of
    argument dtypes (arrays) and types (scalars) has been through that, a loop exists for it
    and numpy picks it again, so later calls with the same combination go to the numpy
    gufunc at once: the same loop runs on the same arguments. A new combination, a frozen or
    a non-dynamic gufunc takes numba's own path.
    """
    if getattr(GUFunc.__call__, "earshot_memo", False):
        return
    numba_call = GUFunc.__call__

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._frozen or not self.is_dynamic:
            return numba_call(self, *args, **kwargs)
        if "out" in kwargs:
            # As numba does: a dynamic gufunc takes its output as the last argument.
            args += (kwargs.pop("out"),)
        key = tuple(a.dtype if isinstance(a, np.ndarray) else type(a) for a in args)
        resolved: set[tuple[Any, ...]] = self.__dict__.setdefault("_earshot_resolved", set())
        if key in resolved:
            return self.ufunc(*args, **kwargs)
        result = numba_call(self, *args, **kwargs)
        resolved.add(key)
        return result

    call.earshot_memo = True  # type: ignore[attr-defined]
    call.__wrapped__ = numba_call  # type: ignore[attr-defined]
    GUFunc.__call__ = call  # type: ignore[method-assign, assignment]
