"""Pay numba's JIT and librosa's lazy imports once, when a worker starts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def warmup() -> None:
    """Run a tiny analysis (3 s of clicks over a chord) so the first real job is not slow."""
    from analysis.analyze import PROFILES, analyze_file

    sr = 44100
    t = np.arange(3 * sr) / sr
    y = 0.2 * np.sin(2 * np.pi * np.outer(t, [261.63, 329.63, 392.0])).sum(axis=1)
    y[:: sr // 2] += 0.8
    with tempfile.TemporaryDirectory(prefix="earshot-warmup-") as tmp:
        path = Path(tmp) / "warmup.wav"
        sf.write(path, np.clip(y, -1, 1).astype(np.float32), sr, subtype="PCM_16")
        for profile in PROFILES:
            analyze_file(path, profile=profile)
