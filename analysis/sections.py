"""Sections: where the music changes (intro, verse, chorus, the next piece of a medley).

The file is cut into units (its beats, or half-second windows without a beat; grouped so that
there are never more than ``MAX_UNITS``), each described by its mean chroma and MFCC. A
boundary is where the units before and after differ as distributions: the energy distance
(Szekely & Rizzo) between the ``w`` units on each side, a checkerboard-kernel novelty in
the manner of Foote (2000) computed from the band of the self-distance matrix within ``2w``
of the diagonal only, so memory stays linear in the file's length. Sections with similar
mean features share a label (agglomerative clustering, average linkage), as McFee & Ellis
(2014) label the segments of their Laplacian method.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import scipy.cluster.hierarchy

from analysis.features import Features, segment_sums
from analysis.loudness import LOUDNESS_FLOOR_LUFS, Loudness, integrated_loudness
from analysis.rhythm import choose_tempo, tempo_candidates
from analysis.schema import ResultSection, ResultSectionKey
from analysis.tonal import MODES, PITCH_CLASSES, key_confidence, key_scores

# At most this many units: the novelty's cost and memory grow with it (an hour of beats at
# 120 BPM is 7200 beats, grouped 5 by 5).
MAX_UNITS = 1500
# Unit length when there are no beats, seconds.
UNIT_S = 0.5
# Seconds on each side of a candidate boundary that the novelty compares (in units, at
# least MIN_KERNEL_UNITS and at most MAX_KERNEL_UNITS); sections are at least this long.
KERNEL_S = 8.0
MIN_KERNEL_UNITS = 4
MAX_KERNEL_UNITS = 32
# MFCC 0..12: level, spectral slope and the coarse envelope; the rest is fine detail.
MFCC_COEFFS = 13
# Each MFCC is scaled by its standard deviation over the units, but never by less than this
# (dB-like units), so that a steady signal's rounding noise is not blown up into changes.
MFCC_STD_FLOOR = 2.0
# A boundary needs an energy distance of at least this (feature space units: chroma
# vectors of unit length, MFCC in standard deviations over sqrt(MFCC_COEFFS)), and must
# stand NOVELTY_MAD robust deviations above the novelty's median.
NOVELTY_MIN = 0.15
NOVELTY_MAD = 3.0
# A section keeps the file's tempo when that is among its own tempo candidates (within
# TEMPO_MATCH) with at least this weight: one metrical level through the file unless a
# section's own evidence rules it out.
TEMPO_KEEP_WEIGHT = 0.2
TEMPO_MATCH = 0.04
# Sections whose mean features are closer than this share a label.
LABEL_DISTANCE = 0.6
# A boundary's confidence is 1 - exp(-novelty / NOVELTY_SCALE): the novelty peaks of the
# benchmark tracks' boundaries run from ~0.8 to ~3.
NOVELTY_SCALE = 1.0


def find_sections(
    features: Features,
    *,
    beats_s: np.ndarray,
    onsets_s: np.ndarray,
    bpm: float,
    loudness: Loudness,
    sample_rate: int,
    duration_s: float,
    sr: int,
    hop_length: int,
) -> list[ResultSection]:
    """Contiguous sections covering the file, with their label, loudness, tempo and key.

    Parameters
    ----------
    features : Features
        Frame series and per-frame chroma and MFCC of the file.
    beats_s : np.ndarray [shape=(n_beats,)]
        Beat times, seconds (may be empty).
    onsets_s : np.ndarray [shape=(n_onsets,)]
        Onset times, seconds (the sections' tempo reads those inside each).
    bpm : float
        The file's tempo (0 without a pulse).
    loudness : Loudness
        The file's loudness with its step energies.
    sample_rate : int
        Native rate of the file (the unit of ``loudness.step``).
    duration_s : float
        Seconds of the analysis signal.
    sr, hop_length : int
        Rate of the analysis signal and samples per frame.

    Returns
    -------
    list of ResultSection
        At least one (the whole file), each ``end_s`` the next ``start_s``.
    """
    hop_s = hop_length / sr
    n = features.series["rms"].shape[0]
    starts = unit_starts(beats_s, n_frames=n, hop_s=hop_s)
    x = unit_features(features, starts)
    boundaries: list[int] = []  # unit indices where a section starts (after the first)
    strength: list[float] = []
    if starts.size >= 2 * MIN_KERNEL_UNITS:
        unit_s = float(np.median(np.diff(np.append(starts, n)))) * hop_s
        w = int(np.clip(round(KERNEL_S / max(unit_s, 1e-3)), MIN_KERNEL_UNITS, MAX_KERNEL_UNITS))
        curve = novelty(x, w)
        boundaries = pick_boundaries(curve, w)
        strength = [float(curve[i]) for i in boundaries]
    unit_edges = [0, *boundaries, starts.size]
    frame_edges = [int(starts[i]) for i in unit_edges[:-1]] + [n]
    labels = label_sections(
        np.stack([x[a:b].mean(axis=0) for a, b in itertools.pairwise(unit_edges)])
    )
    out: list[ResultSection] = []
    for k, (f0, f1) in enumerate(itertools.pairwise(frame_edges)):
        start_s = 0.0 if k == 0 else f0 * hop_s
        end_s = duration_s if k == len(labels) - 1 else f1 * hop_s
        # The first section starts with the file: nothing to doubt.
        confidence = 1.0 if k == 0 else _boundary_confidence(strength[k - 1])
        out.append(
            _describe(
                features,
                f0,
                f1,
                start_s=start_s,
                end_s=end_s,
                label=labels[k],
                confidence=confidence,
                onsets_s=onsets_s,
                file_bpm=bpm,
                loudness=loudness,
                sample_rate=sample_rate,
                sr=sr,
                hop_length=hop_length,
            )
        )
    return out


def unit_starts(beats_s: np.ndarray, *, n_frames: int, hop_s: float) -> np.ndarray:
    """First frame of each unit: 0, then every beat (or every ``UNIT_S``), at most ``MAX_UNITS``."""
    if n_frames == 0:
        return np.zeros(1, dtype=np.int64)
    frames = np.round(np.asarray(beats_s, dtype=np.float64) / hop_s).astype(np.int64)
    frames = frames[(frames > 0) & (frames < n_frames)]
    if frames.size < 2 * MIN_KERNEL_UNITS:
        frames = np.arange(0, n_frames, max(1, round(UNIT_S / hop_s)), dtype=np.int64)
    starts = np.unique(np.concatenate([[0], frames]))
    group = -(-starts.size // MAX_UNITS)
    return starts[::group]


def unit_features(features: Features, starts: np.ndarray) -> np.ndarray:
    """(n_units, 12 + MFCC_COEFFS) features: unit-length mean chroma, scaled mean MFCC."""
    n = features.series["rms"].shape[0]
    if n == 0:
        return np.zeros((starts.size, 12 + MFCC_COEFFS))
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    chroma = segment_sums(features.matrices["chroma"], starts)
    norms = np.linalg.norm(chroma, axis=0)
    chroma = chroma / np.where(norms > 1e-9, norms, 1.0)
    mfcc = segment_sums(features.matrices["mfcc"][:MFCC_COEFFS], starts) / counts
    mfcc = mfcc - mfcc.mean(axis=1, keepdims=True)
    mfcc /= np.maximum(mfcc.std(axis=1, keepdims=True), MFCC_STD_FLOOR)
    return np.concatenate([chroma, mfcc / np.sqrt(MFCC_COEFFS)], axis=0).T


def novelty(x: np.ndarray, w: int) -> np.ndarray:
    """Energy distance between the ``w`` units before each unit and the ``w`` from it on.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` over the units ``i-w..i-1`` (X) and ``i..i+w-1``
    (Y); the file is extended by repeating its first and last unit, so the curve falls to
    zero at the ends. Only distances between units less than ``2w`` apart are computed.

    Parameters
    ----------
    x : np.ndarray [shape=(n_units, d)]
    w : int

    Returns
    -------
    np.ndarray [shape=(n_units,)]
        Value ``i`` scores a boundary just before unit ``i``.
    """
    n = x.shape[0]
    padded = np.concatenate([np.repeat(x[:1], w, axis=0), x, np.repeat(x[-1:], w, axis=0)])
    band = _band_distances(padded, 2 * w)
    idx = np.arange(n) + w  # unit i in padded coordinates
    pairs = w * (w - 1) / 2  # w >= MIN_KERNEL_UNITS, so never 0
    # Each sum's terms gathered for every unit at once and added in the order a loop of
    # ``+=`` over the pairs added them (the values are unchanged to the last bit).
    cross_terms, within_terms = _term_order(w)
    cross = _ordered_sums(band, *cross_terms, idx)
    within = _ordered_sums(band, *within_terms, idx)
    # Each side has `pairs` distinct pairs: `within / pairs` is E|X - X'| + E|Y - Y'|.
    return 2.0 * cross / (w * w) - within / pairs


@functools.cache
def _term_order(w: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The terms of ``novelty``'s two sums, each as (band row k, offset from unit i), in the
    order the sums add them.

    The cross pairs (a, b), a = -w .. -1 and b = 0 .. w-1: ``band[b - a][i + a]``. The pairs
    within, a < a2 < 0: ``band[a2 - a][i + a]`` then ``band[a2 - a][i + a + w]`` (both before
    unit i, then both from unit i on, at the same offsets).
    """
    cross = [(b - a, a) for a in range(-w, 0) for b in range(w)]
    within = [(a2 - a, at) for a in range(-w, 0) for a2 in range(a + 1, 0) for at in (a, a + w)]
    # Shared by every call with this w: read-only, as the other remembered arrays.
    orders = (np.array(cross).T, np.array(within).T)
    for order in orders:
        order.flags.writeable = False
    return (orders[0][0], orders[0][1]), (orders[1][0], orders[1][1])


# Elements of one gathered block of terms (8 MB of float64): a long file's units go through
# the sums a block of units at a time.
_GATHER_ELEMENTS = 1 << 20


def _band_distances(padded: np.ndarray, bands: int) -> np.ndarray:
    """(bands, units) distances: row k, column j is ``np.linalg.norm(padded[j + k] - padded[j])``
    (0 where ``j + k`` is past the end, and in row 0).

    The same values as ``np.linalg.norm(padded[k:] - padded[:-k], axis=1)`` for each k: that
    is the square root of each difference row's ``np.add.reduce`` of its squares, computed
    here for every k at once where the differences are small (a short file), else k by k.
    """
    m, d = padded.shape
    band = np.zeros((bands, m))
    ks = np.arange(1, min(bands, m))
    rows = int(np.sum(m - ks))
    if rows * d <= _GATHER_ELEMENTS:
        k = np.repeat(ks, m - ks)
        j = np.arange(rows) - np.repeat(np.cumsum(m - ks) - (m - ks), m - ks)
        diff = padded[j + k] - padded[j]
        band[k, j] = np.sqrt(np.add.reduce(diff * diff, axis=1))
    else:
        for k in ks:
            diff = padded[k:] - padded[:-k]
            band[k, : m - k] = np.sqrt(np.add.reduce(diff * diff, axis=1))
    return band


def _ordered_sums(band: np.ndarray, k: np.ndarray, at: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For each unit ``i`` of ``idx``, ``band[k[t], i + at[t]]`` summed over t = 0, 1, … in
    that order, starting from 0: what ``s += band[k[t]][idx + at[t]]`` in a loop gives, bit for
    bit (``np.add.accumulate`` adds down the rows one at a time; ``np.sum`` may add pairwise)."""
    out = np.zeros(idx.size)
    step = max(1, _GATHER_ELEMENTS // max(k.size, 1))
    for start in range(0, idx.size, step):
        cols = idx[start : start + step]
        terms = band[k[:, None], cols[None, :] + at[:, None]]
        out[start : start + step] = np.add.accumulate(terms, axis=0)[-1]
    return out


def pick_boundaries(curve: np.ndarray, w: int) -> list[int]:
    """Peaks of the novelty, strongest first, at least ``w`` units from each other and the ends.

    A peak must reach ``NOVELTY_MIN`` and ``NOVELTY_MAD`` median absolute deviations above
    the curve's median.
    """
    n = curve.size
    median = float(np.median(curve))
    mad = float(np.median(np.abs(curve - median)))
    threshold = max(NOVELTY_MIN, median + NOVELTY_MAD * mad)
    order = np.argsort(-curve, kind="stable")
    chosen: list[int] = []
    for i in order:
        if curve[i] < threshold:
            break
        if i < w // 2 or i > n - w // 2 or any(abs(int(i) - c) < w for c in chosen):
            continue
        chosen.append(int(i))
    return sorted(chosen)


def label_sections(means: np.ndarray) -> list[str]:
    """Letters by first appearance ("A", "B", "A", ...): sections closer than
    ``LABEL_DISTANCE`` (average linkage over their mean features) share one."""
    if means.shape[0] == 1:
        return ["A"]
    tree = scipy.cluster.hierarchy.linkage(means, method="average", metric="euclidean")
    clusters = scipy.cluster.hierarchy.fcluster(tree, t=LABEL_DISTANCE, criterion="distance")
    names: dict[int, str] = {}
    for c in clusters:
        names.setdefault(int(c), _letters(len(names)))
    return [names[int(c)] for c in clusters]


def _letters(i: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA", like spreadsheet columns."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(ord("A") + r) + out
    return out


def _boundary_confidence(strength: float) -> float:
    return float(1.0 - np.exp(-strength / NOVELTY_SCALE))


def _describe(
    features: Features,
    f0: int,
    f1: int,
    *,
    start_s: float,
    end_s: float,
    label: str,
    confidence: float,
    onsets_s: np.ndarray,
    file_bpm: float,
    loudness: Loudness,
    sample_rate: int,
    sr: int,
    hop_length: int,
) -> ResultSection:
    """One section's document entry: loudness from its steps, tempo and key from its frames."""
    step_s = loudness.step / sample_rate if loudness.step else 0.1
    a, b = round(start_s / step_s), round(end_s / step_s)
    lufs = integrated_loudness(loudness.steps[a:b], loudness.step) if loudness.step else -np.inf
    hop_s = hop_length / sr
    inside = onsets_s[(onsets_s >= f0 * hop_s) & (onsets_s < f1 * hop_s)] - f0 * hop_s
    envelope = features.series["onset_strength"][f0:f1]
    bpm = section_tempo(envelope, np.asarray(inside, dtype=np.float64), file_bpm, sr / hop_length)
    # The pitch-class profile the file's key is decided on (analysis.tonal).
    profile = features.matrices["pcp"][:, f0:f1]
    return {
        "start_s": round(start_s, 4),
        "end_s": round(end_s, 4),
        "label": label,
        "confidence": round(confidence, 4),
        "loudness_lufs": round(float(max(lufs, LOUDNESS_FLOOR_LUFS)), 3),
        "tempo_bpm": round(bpm, 3),
        "key": section_key(profile.mean(axis=1) if profile.shape[1] else np.zeros(12)),
    }


def section_tempo(
    onset_env: np.ndarray, onsets_s: np.ndarray, file_bpm: float, frame_rate: float
) -> float:
    """A section's tempo, by the file tempo's method on the section's envelope and onsets.

    The file's own tempo is kept when the section's evidence gives it at least
    ``TEMPO_KEEP_WEIGHT``: on a few seconds the model's choice between related levels (a
    half, two thirds) is less sure than on the whole file, and a tempo that flips between
    levels from section to section would be an artefact, not a tempo change.
    """
    bpm, _, top = choose_tempo(tempo_candidates(onset_env, frame_rate, onsets_s))
    for candidate, weight in top:
        near = file_bpm > 0 and abs(candidate / file_bpm - 1.0) <= TEMPO_MATCH
        if near and weight >= TEMPO_KEEP_WEIGHT:
            return float(candidate)
    return float(bpm)


def section_key(profile: np.ndarray) -> ResultSectionKey:
    """The key whose profile fits a section's mean pitch-class profile best, as the file's
    key is decided (``analysis.tonal.key_scores``), without its local-key search."""
    scores = key_scores(profile)
    k = int(np.argmax(scores))
    return {
        "tonic": PITCH_CLASSES[k % 12],
        "mode": MODES[k // 12],
        "confidence": round(key_confidence(scores), 4),
    }
