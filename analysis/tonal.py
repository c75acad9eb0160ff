"""Tonal estimates: the key (a mean chroma vector correlated with rotated key profiles) and
the tuning (deviation from A440) that the chroma filters are built for.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# librosa.piptrack's defaults, as estimate_tuning calls it.
_TUNING_FMIN = 150.0
_TUNING_FMAX = 4000.0
_TUNING_THRESHOLD = 0.1


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


def estimate_tuning(S: np.ndarray, sr: int, n_fft: int) -> float:
    """``librosa.estimate_tuning(S=S, sr=sr, n_fft=n_fft)`` of a (bins, frames) magnitude.

    The same numbers (piptrack's defaults: peaks between 150 and 4000 Hz that rise above a
    tenth of their frame's maximum, parabolic interpolation, magnitudes above the median,
    then ``pitch_tuning``), computed only on the bins piptrack's frequency mask keeps: a
    quarter of the spectrum, and without its per-bin numba stencils, ~4x faster. The
    arithmetic follows librosa's dtypes (float32 spectrum, float64 interpolation) so that the
    pitches, and so the histogram bin that wins, are the same.
    """
    if S.shape[1] == 0 or not np.any(S > 0):
        return 0.0
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    kept = np.flatnonzero((freqs >= _TUNING_FMIN) & (freqs < min(_TUNING_FMAX, sr / 2.0)))
    if kept.size == 0:
        return 0.0
    lo, hi = int(kept[0]), int(kept[-1]) + 1
    # Bins lo-1 .. hi: each kept bin with both neighbours (lo >= 1 since fmin > 0, and hi is
    # at most the Nyquist bin since the mask stops below it).
    x = S[lo - 1 : hi + 1]
    ref = np.float32(_TUNING_THRESHOLD) * S.max(axis=0)
    z = x * (x > ref)
    centre, below, above = x[1:-1], x[:-2], x[2:]
    peaks = (z[1:-1] > z[:-2]) & (z[1:-1] >= z[2:])
    # librosa's stencil: a in float64 from a float32 sum, b a float32 difference halved in
    # float64, the shift stored as float32.
    a = (above + below).astype(np.float64) - 2 * centre.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(np.float32)
    # np.gradient inside the spectrum: central differences in float32.
    dskew = np.float32(0.5) * ((above - below) / np.float32(2.0)) * shift
    rows, cols = np.nonzero(peaks)
    pitch = ((rows + lo + shift[rows, cols].astype(np.float64)) * float(sr) / n_fft).astype(
        np.float32
    )
    mag = centre[rows, cols] + dskew[rows, cols]
    voiced = pitch > 0
    if not np.any(voiced):
        return 0.0
    threshold = np.median(mag[voiced])
    chosen = pitch[(mag >= threshold) & voiced]
    if not np.any(chosen > 0):
        return 0.0
    tuning = float(librosa.pitch_tuning(chosen))
    return tuning if np.isfinite(tuning) else 0.0
