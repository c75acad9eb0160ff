"""Pay numba's JIT and librosa's lazy imports once, when a worker starts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from analysis.analyze import Analysis


def warmup() -> dict[str, Analysis]:
    """Run a tiny analysis (3 s of clicks over a chord) so the first real job is not slow.

    Every profile is analysed, since each has its own filter banks to build.

    Returns
    -------
    dict[str, Analysis]
        The analysis of the warm-up signal, by profile: a C-major triad (C4, E4, G4) at
        44.1 kHz with a click every half second.
    """
    # PyAV decodes Ogg Vorbis, m4a and what libsndfile cannot read: ~70 ms of imports that
    # the first such upload would otherwise pay.
    import av  # noqa: F401

    from analysis.analyze import analyze_file
    from analysis.profiles import PROFILES

    sr = 44100
    t = np.arange(3 * sr) / sr
    y = 0.2 * np.sin(2 * np.pi * np.outer(t, [261.63, 329.63, 392.0])).sum(axis=1)
    y[:: sr // 2] += 0.8
    with tempfile.TemporaryDirectory(prefix="earshot-warmup-") as tmp:
        path = Path(tmp) / "warmup.wav"
        sf.write(path, np.clip(y, -1, 1).astype(np.float32), sr, subtype="PCM_16")
        return {profile: analyze_file(path, profile=profile) for profile in PROFILES}
