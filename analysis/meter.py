"""Meter: how many beats make a bar, and which beat starts each one.

Each beat gets an accent from what marks a downbeat (onset strength, level, low-band level,
harmonic change); the bar length and phase are those whose beats stand out most from the
others (docs/result.md, "Bars, sections and fades"). Signal processing on one value per
beat: nothing here is larger than the beat list.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft

from analysis.features import Features, segment_sums
from analysis.segments import level_db

# Bar lengths (beats per bar) the meter chooses from.
BAR_LENGTHS = range(2, 8)
# The downbeat phase must stand out of the other phases by this t statistic (difference of
# mean accents over its standard error) to count as evidence; with ~30 hypotheses (bar
# lengths x phases) pure noise reaches 3.5 about once in a hundred files.
MIN_METER_T = 3.5
# A bar of 2 is read as a bar of 4 when the bar of 4 stands out nearly as much (at least this
# share of the difference): beat 3 accented, but less than beat 1 (below ~70 % of its accent),
# as in most 4/4; a true 2/4, every other beat alike, gives only 2/3.
DOUBLE_BAR_RATIO = 0.9
# A bar length is only judged on at least this many bars: on fewer, noise passes the t test.
MIN_BARS = 4
# Without that evidence the bar is 4 beats from the first beat, with confidence 0: the most
# common meter, stated as no more than a default.
DEFAULT_BEATS_PER_BAR = 4
# Half-width of the window an accent is read in around a beat, seconds.
ACCENT_WINDOW_S = 0.05
# Weights of the accent cues, chosen on the dev half of make eval's set (scripts/eval_meter.py):
# the low band (kick, bass) marks downbeats more reliably than onset strength, which a snare
# on beats 2 and 4 shares, and chords do not change on every bar of a melody.
ONSET_WEIGHT = 1.0
LEVEL_WEIGHT = 1.0
LOW_BAND_WEIGHT = 2.0
HARMONY_WEIGHT = 0.5
# Mel bands centred below this carry the kick drum and bass: the low-band accent.
LOW_BAND_HZ = 200.0


@dataclass(frozen=True)
class Meter:
    """Beats per bar (0 without beats), a 0..1 confidence, downbeats and each beat's position."""

    beats_per_bar: int
    confidence: float
    downbeats_s: np.ndarray
    beat_positions: np.ndarray


def beat_frames(beats_s: np.ndarray, hop_s: float, n_frames: int) -> np.ndarray:
    """The frame of each beat time, clipped into the file."""
    return np.clip(np.round(np.asarray(beats_s) / hop_s).astype(np.int64), 0, max(n_frames - 1, 0))


def _window_max(x: np.ndarray, frames: np.ndarray, radius: int) -> np.ndarray:
    """Largest value of ``x`` within ``radius`` frames of each of ``frames``."""
    padded = np.pad(x.astype(np.float64), radius, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1)
    return windows[frames].max(axis=1)


def _standardise(x: np.ndarray, floor: float) -> np.ndarray:
    """``x`` minus its mean over its standard deviation; zeros when it varies less than
    ``floor`` (rounding noise must not be blown up into evidence)."""
    std = float(np.std(x))
    if x.size == 0 or std < floor:
        return np.zeros_like(x, dtype=np.float64)
    return (x - float(np.mean(x))) / std


@functools.cache
def low_band_weights(n_mels: int, n_mfcc: int, sr: int) -> np.ndarray:
    """(n_mfcc,) weights turning a frame's MFCC into the mean log-mel (dB) of the low bands.

    The MFCC are the first rows of the orthonormal DCT-II of the log-mel spectrum, so its
    transpose maps them back to a smoothed log-mel spectrum; averaging that over the bands
    centred below ``LOW_BAND_HZ`` is one dot product per frame.
    """
    dct = scipy.fft.dct(np.eye(n_mels), axis=0, type=2, norm="ortho")[:n_mfcc]
    centres = librosa.mel_frequencies(n_mels + 2, fmax=sr / 2.0)[1:-1]
    low = centres < LOW_BAND_HZ
    if not np.any(low):
        low[0] = True
    return np.asarray(dct[:, low].mean(axis=1))


def beat_accents(
    beats_s: np.ndarray, features: Features, *, sr: int, hop_length: int, n_mels: int
) -> np.ndarray:
    """How strongly each beat is marked: the evidence a downbeat shows.

    A weighted sum of four standardised cues: the onset strength at the beat, the frame
    level (dB), the low-band log-mel level (kick drum and bass, from the MFCC) - each the
    largest within ``ACCENT_WINDOW_S`` of the beat - and the harmonic change (1 - cosine
    similarity of the mean chroma of the beat's interval and of the one before; chords
    change on bars). Weights ``*_WEIGHT``; the sum is scaled to unit standard deviation.

    Parameters
    ----------
    beats_s : np.ndarray [shape=(n_beats,)]
        Beat times, seconds.
    features : Features
        Frame series and matrices of the file.
    sr, hop_length, n_mels : int
        Rate, hop and mel bands of the frames (the profile's).

    Returns
    -------
    accents : np.ndarray [shape=(n_beats,)]
    """
    n_beats = len(beats_s)
    onset = features.series["onset_strength"]
    n = onset.shape[0]
    if n_beats == 0 or n == 0:
        return np.zeros(n_beats)
    hop_s = hop_length / sr
    frames = beat_frames(beats_s, hop_s, n)
    radius = max(1, round(ACCENT_WINDOW_S / hop_s))
    mfcc = features.matrices["mfcc"]
    low = low_band_weights(n_mels, mfcc.shape[0], sr) @ mfcc[:, :n].astype(np.float64)
    level = level_db(features.series["rms"])
    cues = [
        ONSET_WEIGHT * _standardise(_window_max(onset, frames, radius), floor=0.05),
        LEVEL_WEIGHT * _standardise(_window_max(level, frames, radius), floor=0.1),
        LOW_BAND_WEIGHT * _standardise(_window_max(low, frames, radius), floor=0.1),
    ]
    bounds = np.unique(frames)
    if bounds.size == n_beats and n_beats > 1:
        sums = segment_sums(features.matrices["chroma"], bounds)
        norms = np.linalg.norm(sums, axis=0)
        unit = sums / np.where(norms > 1e-9, norms, 1.0)
        change = np.zeros(n_beats)
        change[1:] = 1.0 - np.sum(unit[:, 1:] * unit[:, :-1], axis=0)
        cues.append(HARMONY_WEIGHT * _standardise(change, floor=1e-3))
    total = np.sum(cues, axis=0)
    return _standardise(total, floor=1e-9)


def _phase_contrast(accents: np.ndarray, m: int) -> tuple[int, float, float]:
    """Best downbeat phase for bars of ``m`` beats: (phase, mean difference, t statistic)."""
    best = (0, -np.inf, 0.0)
    index = np.arange(accents.size) % m
    for p in range(m):
        on, off = accents[index == p], accents[index != p]
        if on.size < 2 or off.size < 2:
            continue
        diff = float(on.mean() - off.mean())
        se = float(np.sqrt(on.var() / on.size + off.var() / off.size))
        t = diff / se if se > 1e-12 else 0.0
        if diff > best[1]:
            best = (p, diff, t)
    return best


def estimate_meter(
    beats_s: np.ndarray,
    accents: np.ndarray,
    *,
    section_starts_s: list[float] | None = None,
) -> Meter:
    """Beats per bar and downbeats from the accents of the beats.

    For each bar length ``m`` of 2..7 and phase ``p``, the mean accent of the beats
    ``i = p (mod m)`` minus that of the others; the bar length and phase with the largest
    difference win (a multiple of the true bar length dilutes the difference, a divisor
    mixes accented and plain beats in the "other" group); a bar of 2 becomes a bar of 4 when
    that stands out nearly as much (``DOUBLE_BAR_RATIO``). Confidence is the share of whole
    bars whose most accented beat is the downbeat, rescaled so that chance (1 in ``m``)
    reads 0. The phase is chosen again inside each section (a medley, or a bar of 2 in a
    song, shifts it) where the section's own evidence passes the same test.

    Parameters
    ----------
    beats_s : np.ndarray [shape=(n_beats,)]
        Beat times, seconds.
    accents : np.ndarray [shape=(n_beats,)]
        ``beat_accents`` of those beats.
    section_starts_s : list of float, optional
        Where sections after the first start.

    Returns
    -------
    Meter
        ``beats_per_bar`` 0 without beats; ``DEFAULT_BEATS_PER_BAR`` from the first beat,
        confidence 0, when no bar length passes ``MIN_METER_T``.
    """
    beats_s = np.asarray(beats_s, dtype=np.float64)
    n = beats_s.size
    if n == 0:
        return Meter(0, 0.0, np.zeros(0), np.zeros(0, dtype=np.int64))
    candidates = {}
    for m in BAR_LENGTHS:
        if n >= MIN_BARS * m:
            candidates[m] = _phase_contrast(accents, m)
    best = max(candidates, key=lambda m: candidates[m][1], default=0)
    if not best or candidates[best][2] < MIN_METER_T:
        m, confidence = DEFAULT_BEATS_PER_BAR, 0.0
        phases = np.zeros(n, dtype=np.int64)
    else:
        m = best
        if m == 2 and 4 in candidates:
            four = candidates[4]
            if four[1] >= DOUBLE_BAR_RATIO * candidates[2][1] and four[2] >= MIN_METER_T:
                m = 4
        p = candidates[m][0]
        phases = np.full(n, p, dtype=np.int64)
        starts = np.searchsorted(beats_s, np.asarray(section_starts_s or [], dtype=np.float64))
        edges = [0, *starts.tolist(), n]
        for a, b in itertools.pairwise(edges):
            if b - a >= MIN_BARS * m:
                # Phase relative to the global beat index, so it is comparable between sections.
                local = accents[a:b]
                q, _, t = _phase_contrast(local, m)
                if t >= MIN_METER_T:
                    phases[a:b] = (q + a) % m
        confidence = _bar_consistency(accents, phases, m)
    positions = (np.arange(n) - phases) % m + 1
    return Meter(m, confidence, beats_s[positions == 1], positions.astype(np.int64))


def _bar_consistency(accents: np.ndarray, phases: np.ndarray, m: int) -> float:
    """Share of whole bars whose most accented beat is their first, 0 at chance, 1 always."""
    position = (np.arange(accents.size) - phases) % m
    starts = np.flatnonzero(position == 0)
    hits = [
        int(np.argmax(accents[s : s + m])) == 0
        for s in starts
        if s + m <= accents.size and np.all(position[s : s + m] == np.arange(m))
    ]
    if not hits:
        return 0.0
    share = float(np.mean(hits))
    return float(np.clip((share - 1.0 / m) / (1.0 - 1.0 / m), 0.0, 1.0))
