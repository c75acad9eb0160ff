"""Per-frame spectral arithmetic: librosa's definitions on blocks of (frames, bins) rows.

``FeatureExtractor`` (features.py) streams the signal and calls these on each block of
frames; each function here is the exact arithmetic of one librosa feature, restructured so
that frames are contiguous rows and the block stays in the CPU's cache.
"""

from __future__ import annotations

import numba
import numpy as np

# librosa.feature.spectral_contrast's defaults.
CONTRAST_FMIN = 200.0
CONTRAST_BANDS = 6
CONTRAST_QUANTILE = 0.02
ROLL_PERCENT = 0.85


def spectral_shape(
    S: np.ndarray, power: np.ndarray, freqs: np.ndarray, moments: np.ndarray
) -> dict[str, np.ndarray]:
    """Centroid, bandwidth, 85% roll-off (Hz) and flatness of each frame of ``S``.

    librosa's definitions (``spectral_centroid``, ``spectral_bandwidth(p=2)``,
    ``spectral_rolloff(roll_percent=0.85)``, ``spectral_flatness``) with the magnitude
    normalised once instead of once per feature. ``S`` and ``power`` are (frames, bins);
    ``moments`` is (bins, 3): ones, frequencies and their squares.
    """
    sums = S @ moments
    total = sums[:, 0]
    safe = np.where(total > 0, total, 1.0)
    centroid = sums[:, 1] / safe
    # Var = E[f^2] - E[f]^2: the moments come from one matrix product.
    spread = sums[:, 2] / safe - centroid * centroid
    floored = np.maximum(power, 1e-10)
    arithmetic = floored.mean(axis=1)
    geometric = np.exp(np.log(floored, out=floored).mean(axis=1))
    return {
        "spectral_centroid_hz": centroid,
        "spectral_bandwidth_hz": np.sqrt(np.maximum(spread, 0.0)),
        "spectral_rolloff_hz": freqs[rolloff_bins(S, np.float32(ROLL_PERCENT))],
        "spectral_flatness": geometric / arithmetic,
    }


@numba.njit(cache=True, nogil=True)
def rolloff_bins(S: np.ndarray, roll_percent: np.float32) -> np.ndarray:
    """First bin of each frame (row of ``S``) where the running magnitude sum reaches
    ``roll_percent`` of the total.

    librosa takes ``np.cumsum`` over bins in float32; these are the same float32 additions
    in the same order, so the chosen bin is identical even where rounding decides, without
    the (frames, bins) cumulative array. Four frames share a pass: their sums are independent
    chains of additions, which the CPU overlaps.
    """
    n, bins = S.shape
    out = np.zeros(n, dtype=np.int64)
    for f in range(0, n - n % 4, 4):
        t0 = t1 = t2 = t3 = np.float32(0.0)
        for k in range(bins):
            t0 += S[f, k]
            t1 += S[f + 1, k]
            t2 += S[f + 2, k]
            t3 += S[f + 3, k]
        _first_reaching(S, f, roll_percent * t0, out)
        _first_reaching(S, f + 1, roll_percent * t1, out)
        _first_reaching(S, f + 2, roll_percent * t2, out)
        _first_reaching(S, f + 3, roll_percent * t3, out)
    for f in range(n - n % 4, n):
        total = np.float32(0.0)
        for k in range(bins):
            total += S[f, k]
        _first_reaching(S, f, roll_percent * total, out)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _first_reaching(S: np.ndarray, f: int, threshold: np.float32, out: np.ndarray) -> None:
    running = np.float32(0.0)
    for k in range(S.shape[1]):
        running += S[f, k]
        if running >= threshold:
            out[f] = k
            return


@numba.njit(cache=True, nogil=True)
def magnitude32(spectrum: np.ndarray) -> np.ndarray:
    """|spectrum| in float32: sqrt(re^2 + im^2) in float64, rounded once.

    numpy's complex abs is hypot, guarded against overflow that a spectrum of audio cannot
    reach, and 3x slower; rounded to float32 the two agree (no difference in 262k values of
    spectra spanning 10 decades).
    """
    frames, bins = spectrum.shape
    out = np.empty((frames, bins), np.float32)
    for i in range(frames):
        for k in range(bins):
            z = spectrum[i, k]
            out[i, k] = np.sqrt(z.real * z.real + z.imag * z.imag)
    return out


def contrast_bands(freqs: np.ndarray, sr: int) -> list[tuple[int, int, int]]:
    """``(first bin, end bin, quantile count)`` of each band of ``spectral_contrast``.

    librosa's band edges, overlaps and per-band counts, worked out once instead of per call.
    """
    octaves = np.zeros(CONTRAST_BANDS + 2)
    octaves[1:] = CONTRAST_FMIN * (2.0 ** np.arange(CONTRAST_BANDS + 1))
    bands = []
    for k in range(CONTRAST_BANDS + 1):
        current = (freqs >= octaves[k]) & (freqs <= octaves[k + 1])
        idx = np.flatnonzero(current)
        if k > 0:
            current[idx[0] - 1] = True
        if k == CONTRAST_BANDS:
            current[idx[-1] + 1 :] = True
        selected = np.flatnonzero(current)
        if k < CONTRAST_BANDS:
            selected = selected[:-1]
        count = max(int(np.rint(CONTRAST_QUANTILE * np.sum(current))), 1)
        bands.append((int(selected[0]), int(selected[-1]) + 1, count))
    return bands


def contrast_extremes(
    S: np.ndarray, bands: list[tuple[int, int, int]], valley: np.ndarray, peak: np.ndarray
) -> None:
    """Valleys and peaks of ``librosa.feature.spectral_contrast`` of (frames, bins) ``S``.

    Each band's valley and peak are the means of its ``count`` smallest and largest
    magnitudes: a min/max where ``count`` is 1, a sort of the band's contiguous rows
    otherwise (librosa sorts along the strided bin axis, several times slower). Written to
    the (frames, bands) ``valley`` and ``peak``; the contrast is their ratio in dB.
    """
    for k, (lo, hi, count) in enumerate(bands):
        band = S[:, lo:hi]
        if count == 1:
            valley[:, k] = band.min(axis=1)
            peak[:, k] = band.max(axis=1)
        else:
            ordered = np.sort(band, axis=1)
            valley[:, k] = ordered[:, :count].mean(axis=1)
            peak[:, k] = ordered[:, -count:].mean(axis=1)


def power_to_db(x: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """``librosa.power_to_db(x)`` with its defaults: ref 1, amin 1e-10, top_db 80."""
    db = 10.0 * np.log10(np.maximum(x, 1e-10))
    return np.maximum(db, db.max() - top_db) if db.size else db
