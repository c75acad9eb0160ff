"""Key estimation: a mean chroma vector correlated with rotated key profiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class Key:
    """A key and the Pearson correlation (clipped to 0..1) of its profile with the chroma."""

    tonic: str
    mode: str
    confidence: float


def estimate_key(chroma_mean: np.ndarray) -> Key:
    """Krumhansl-Schmuckler key estimate.

    Parameters
    ----------
    chroma_mean : np.ndarray [shape=(12,)]
        Mean chroma over the file, pitch class C first.

    Returns
    -------
    Key
        Confidence 0.0 (and C major, by convention) when the chroma is flat or empty, as for
        silence or noise.
    """
    chroma = np.asarray(chroma_mean, dtype=np.float64)
    if chroma.shape != (12,) or np.ptp(chroma) <= 1e-9:
        return Key("C", "major", 0.0)
    best = ("C", "major", -np.inf)
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best[2]:
                best = (PITCH_CLASSES[tonic], mode, r)
    return Key(best[0], best[1], float(np.clip(best[2], 0.0, 1.0)))
