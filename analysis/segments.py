"""Segments: short, acoustically uniform units that start at onsets (a note, a chord, a hit).

Spotify's audio-analysis calls them segments: each has a level contour, a 12-bin pitch
profile and 12 timbre coefficients. A long file has thousands, so they travel beside the
result document (``Analysis.segments``, stored as ``segments.json``). Every figure is a
reduction of frames the feature pass kept (``np.add.reduceat`` over the segments' frame
ranges), so the cost is a few passes over the frames whatever the number of segments.
"""

from __future__ import annotations

import numpy as np

from analysis.features import Features
from analysis.loudness import DB_FLOOR
from analysis.schema import Segment

# Onsets closer than this to the previous segment's start do not start a new one, seconds.
MIN_SEGMENT_S = 0.08
# An onset weaker than this share of the median onset is merged into the segment before it
# when the two sound alike: chroma cosine similarity at least MERGE_CHROMA and MFCC 1..12
# within MERGE_TIMBRE (Euclidean, dB-like units of the cepstrum).
MERGE_ONSET = 0.5
MERGE_CHROMA = 0.95
MERGE_TIMBRE = 10.0
# Timbre: MFCC 0..11 (0 is the level, 1 the spectral slope, the rest the envelope's shape).
TIMBRE_COEFFS = 12
# Confidence 1.0 goes to onsets at least as strong as this percentile of the file's onsets.
CONFIDENCE_PERCENTILE = 90.0


def find_segments(features: Features, *, onsets_s: np.ndarray, hop_s: float) -> list[Segment]:
    """Segments from the file's start and its onsets, merged where nothing changes.

    Parameters
    ----------
    features : Features
        Frame series (``rms``, ``onset_strength``) and per-frame chroma and MFCC.
    onsets_s : np.ndarray [shape=(n_onsets,)]
        Onset times in seconds (``Rhythm.onsets_s``).
    hop_s : float
        Seconds per frame.

    Returns
    -------
    list of Segment
        Contiguous, the first at 0.0 and the last ending with the file; empty for a file
        with no frames.
    """
    rms = features.series["rms"]
    n = rms.shape[0]
    if n == 0:
        return []
    env = features.series["onset_strength"].astype(np.float64)
    frames = np.round(np.asarray(onsets_s, dtype=np.float64) / hop_s).astype(np.int64)
    starts = _spaced(np.unique(np.concatenate([[0], frames[(frames > 0) & (frames < n)]])), hop_s)
    # An onset's strength: the envelope's peak within a frame of it.
    peak = np.maximum(env[starts], env[np.minimum(starts + 1, n - 1)])
    chroma = _means(features.matrices["chroma"], starts, n)
    timbre = _means(features.matrices["mfcc"][:TIMBRE_COEFFS], starts, n)
    if starts.size > 1:
        onset_peaks = peak[1:]
        weak = onset_peaks < MERGE_ONSET * float(np.median(onset_peaks))
        unit = chroma / np.maximum(np.linalg.norm(chroma, axis=0), 1e-9)
        alike_pitch = np.sum(unit[:, 1:] * unit[:, :-1], axis=0) >= MERGE_CHROMA
        alike_timbre = np.linalg.norm(timbre[1:, 1:] - timbre[1:, :-1], axis=0) <= MERGE_TIMBRE
        keep = np.concatenate([[True], ~(weak & alike_pitch & alike_timbre)])
        if not np.all(keep):
            starts, peak = starts[keep], peak[keep]
            chroma = _means(features.matrices["chroma"], starts, n)
            timbre = _means(features.matrices["mfcc"][:TIMBRE_COEFFS], starts, n)
    ends = np.append(starts[1:], n)
    level = level_db(rms)
    # The frame the next segment starts on: loudness_end of one is loudness_start of the next.
    end_level = level[np.minimum(ends, n - 1)]
    loudest, loudest_frame = _argmax_per_segment(level, starts, n)
    top = max(float(np.percentile(peak, CONFIDENCE_PERCENTILE)), 1e-9)
    confidence = np.clip(peak / top, 0.0, 1.0)
    pitches = chroma / np.where(chroma.max(axis=0) > 1e-9, chroma.max(axis=0), 1.0)
    # Rounded a column at a time (``rounded``): the same floats as ``round`` of each value,
    # which on an hour's ~190 000 values took 0.25 s of a 1.2-1.6 s merge.
    start_s = starts * hop_s
    end_s = ends * hop_s  # the last is n * hop_s, the file's length in frames
    columns = zip(
        rounded(start_s, 5).tolist(),
        rounded(end_s - start_s, 5).tolist(),
        rounded(confidence, 4).tolist(),
        rounded(level[starts], 3).tolist(),
        rounded(loudest, 3).tolist(),
        rounded((loudest_frame - starts) * hop_s, 5).tolist(),
        rounded(end_level, 3).tolist(),
        rounded(pitches, 4).T.tolist(),
        rounded(timbre, 4).T.tolist(),
        strict=True,
    )
    return [
        {
            "start_s": start,
            "duration_s": duration,
            "confidence": conf,
            "loudness_start_db": first_db,
            "loudness_max_db": max_db,
            "loudness_max_time_s": max_time,
            "loudness_end_db": end_db,
            "pitches": pitch,
            "timbre": tone,
        }
        for start, duration, conf, first_db, max_db, max_time, end_db, pitch, tone in columns
    ]


def rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """``round(float(v), digits)`` of every value, vectorised, bit for bit.

    Python's ``round`` is correctly rounded: the nearest double to ``D / 10**digits``, where
    ``D`` is the integer nearest to the exact ``v * 10**digits`` (ties to even). ``np.round``
    is not (it rounds ``v * 10**digits``, itself rounded, and the quotient it divides back may
    differ in the last place), so it is used only where it provably agrees: the product
    ``v * 10**digits`` is within half an ulp of the exact one, so unless it lies within an
    ulp of a half-integer, its nearest integer is ``D``; ``D / 10**digits`` of two exact
    doubles is then the correctly rounded quotient, as ``round``'s decimal-to-double
    conversion gives. The few values near a half (and any non-finite or huge one) go
    through ``round`` itself.

    Parameters
    ----------
    values : np.ndarray
        Any shape; converted to float64.
    digits : int
        Decimal digits after the point, 0 to 22 (``10**digits`` is then an exact double).

    Returns
    -------
    np.ndarray, float64, the shape of ``values``
    """
    if not 0 <= digits <= 22:
        raise ValueError(f"digits {digits} outside 0..22")
    x = np.asarray(values, dtype=np.float64)
    scale = float(10**digits)
    scaled = x * scale
    nearest = np.rint(scaled)
    out = nearest / scale
    with np.errstate(invalid="ignore"):
        # 0.5 - |scaled - nearest| is the distance to the nearest half-integer (exact here:
        # Sterbenz); huge and non-finite values are unsure too (the comparisons are False).
        unsure = ~(0.5 - np.abs(scaled - nearest) > 2.0 * np.spacing(np.abs(scaled)))
        unsure |= ~(np.abs(scaled) < 2.0**52)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for i in np.flatnonzero(unsure.reshape(-1)).tolist():
        flat_out[i] = round(float(flat_x[i]), digits)
    return out


def _spaced(starts: np.ndarray, hop_s: float) -> np.ndarray:
    """``starts`` without those less than ``MIN_SEGMENT_S`` after the last one kept."""
    gap = max(1, round(MIN_SEGMENT_S / hop_s))
    kept = [int(starts[0])]
    for s in starts[1:].tolist():
        if s - kept[-1] >= gap:
            kept.append(s)
    return np.asarray(kept, dtype=np.int64)


def _means(matrix: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """(k, n_segments) mean of each row of ``matrix`` over each segment's frames."""
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    return np.add.reduceat(matrix[:, :n].astype(np.float64), starts, axis=1) / counts


def level_db(rms: np.ndarray) -> np.ndarray:
    """Frame RMS in dB re full scale, floored at ``DB_FLOOR``, float64."""
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(rms.astype(np.float64)), DB_FLOOR)


def _argmax_per_segment(
    level: np.ndarray, starts: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Largest level of each segment and the first frame where it is reached."""
    loudest = np.maximum.reduceat(level[:n], starts)
    segment = np.repeat(np.arange(starts.size), np.diff(np.append(starts, n)))
    at_max = np.flatnonzero(level[:n] == loudest[segment])
    _, first = np.unique(segment[at_max], return_index=True)
    return loudest, at_max[first]
