"""Tonal estimates: the key, its alternatives and its changes over time, from a pitch-class
profile of spectral peaks; and the tuning (deviation from A440) the chroma filters are built for.

The pitch-class profile (``frame_pitch_classes``) is a harmonic pitch class profile in the
manner of Gómez (2006): the spectral peaks of a frame between 40 Hz and 3.5 kHz, their
frequency refined by parabolic interpolation, each adding its magnitude to the pitch class it
is nearest to (a cos² taper over half a semitone either side), the frame then scaled to its
strongest semitone. Interpolated peaks place a partial to a few cents where the 10.8 Hz STFT bins
alone cannot separate semitones below ~180 Hz, and leaving out the noise between peaks keeps
drums and breath from flattening the profile. Measured on the evaluation set's dev half
(docs/accuracy.md), this profile with the key decision below raised the MIREX key score from
0.73 (the STFT chroma, Krumhansl-Kessler profiles) to 0.94; the chroma with the
Albrecht-Shanahan profiles alone reached 0.88.

The key (``estimate_key``) is the one of the 24 whose profile correlates best with the mean
pitch-class profile: the mean of the Pearson correlations with the Albrecht & Shanahan (2013)
corpus profile and with the same profile enriched with the overtones a played note adds (its
2nd-4th harmonics, each 0.6 times the previous, as in Gómez's polyphonic profiles), since
spectral peaks count the overtones too. Local keys come from the same scores on windows of a
few seconds, smoothed by a Viterbi path over the 24 keys that pays for every change.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import librosa
import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor")
# Albrecht & Shanahan (2013), "The use of large corpora to train a new type of key-finding
# algorithm", Music Perception 31(1): pitch-class distributions of major and minor pieces,
# tonic first. Chosen over Krumhansl-Kessler and Temperley by measurement (module docstring).
KEY_MAJOR_PROFILE = np.array(
    [0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081]
)
KEY_MINOR_PROFILE = np.array(
    [0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052]
)
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first: the key's profiles before the
# measurement above, kept for analysis.perceptual's major/minor evidence.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Overtones folded into the second profile: harmonics 2..OVERTONES, each OVERTONE_DECAY times
# the previous one's weight.
OVERTONES = 4
OVERTONE_DECAY = 0.6
# Spectral peaks counted by the pitch-class profile: the range of most melodies, chords and
# bass lines, above the rumble and below the upper partials that only echo lower notes.
PCP_FMIN_HZ = 40.0
PCP_FMAX_HZ = 3500.0
# Octaves of semitones from C1 (32.7 Hz) that hold the peaks (up to B7, 3951 Hz).
_PCP_OCTAVES = 7
# A peak counts when it is at least this fraction (-26 dB) of the band's largest magnitude in
# its frame. On the dev half, 0.001 to 0.05 gave the same keys (0.1 one more right), and 0.05
# has ~30 % fewer peaks to place than 0.01; lower voices of a loud mix stay above it.
PCP_PEAK_THRESHOLD = 0.05
# Local keys: scores of windows this long (seconds), one per step, and the penalty (in units of
# the correlation score, per change) a key change pays on the Viterbi path; a segment shorter
# than SEGMENT_MIN_S is merged into its neighbours.
WINDOW_S = 8.0
STEP_S = 1.0
SWITCH_PENALTY = 2.0
SEGMENT_MIN_S = 8.0
# Confidence from the score margin between the best two keys (see key_confidence): on the
# dev half, margins under 0.05 were right 60 % of the time, over 0.11 nearly always.
CONFIDENCE_MARGIN = 0.05
# How well the best key must fit for the confidence to count it (key_confidence): white noise
# and unpitched drum kits score 0.29-0.46, the keyed pieces of the evaluation set 0.69-0.98.
FIT_FLOOR = 0.4
FIT_FULL = 0.8
# librosa.piptrack's defaults, as estimate_tuning calls it.
_TUNING_FMIN = 150.0
_TUNING_FMAX = 4000.0
_TUNING_THRESHOLD = 0.1


@dataclass(frozen=True)
class KeyCandidate:
    """A key and its score: the mean profile correlation, -1..1 (higher is more likely)."""

    tonic: str
    mode: str
    score: float


@dataclass(frozen=True)
class KeySegment:
    """A stretch of the file in one key, its confidence as ``Key.confidence`` means it."""

    start_s: float
    end_s: float
    tonic: str
    mode: str
    confidence: float


@dataclass(frozen=True)
class Key:
    """The key of a file, the best three keys, and the local keys over time.

    ``confidence`` is 0..1, calibrated on the evaluation set from how well the best key fits and
    its lead over the second-best (``key_confidence``); 0.0 for silence.
    """

    tonic: str
    mode: str
    confidence: float
    candidates: tuple[KeyCandidate, ...] = ()
    segments: tuple[KeySegment, ...] = ()


def frame_pitch_classes(S: np.ndarray, sr: int, n_fft: int, tuning: float) -> np.ndarray:
    """Pitch-class profile of each frame from its spectral peaks (module docstring).

    Parameters
    ----------
    S : np.ndarray [shape=(frames, bins)]
        Magnitude spectrum of consecutive frames, one frame per row (``1 + n_fft // 2`` bins).
    sr, n_fft : int
        Sample rate and FFT size ``S`` was computed with.
    tuning : float
        Deviation from A440 in semitones (``estimate_tuning``).

    Returns
    -------
    np.ndarray [shape=(frames, 12)], float32
        Pitch class C first; each frame in units of its strongest semitone (a pitch class
        passes 1 where octaves add up); frames without peaks all 0.
    """
    n = S.shape[0]
    bin_hz = sr / n_fft
    lo = max(int(PCP_FMIN_HZ / bin_hz), 1)
    hi = min(int(PCP_FMAX_HZ / bin_hz) + 1, S.shape[1] - 2)
    if n == 0 or hi <= lo:
        return np.zeros((n, 12), np.float32)
    # Bins lo..hi with their neighbours on both sides (a contiguous copy of the band only).
    x = np.ascontiguousarray(S[:, lo - 1 : hi + 2])
    below, centre, above = x[:, :-2], x[:, 1:-1], x[:, 2:]
    floor = np.float32(PCP_PEAK_THRESHOLD) * centre.max(axis=1, keepdims=True)
    peaks = (centre > below) & (centre >= above) & (centre > floor)
    # Peak positions as flat indices into the band (one flatnonzero beats a 2-D nonzero ~3x).
    rows, cols = np.divmod(np.flatnonzero(peaks), peaks.shape[1])
    flat = x.reshape(-1)
    at = rows * x.shape[1] + cols + 1
    cols += lo
    # Parabolic interpolation of the log magnitude: the peak's offset from its bin (-0.5..0.5)
    # and its height. float32 throughout: cents of precision are plenty, at half the cost.
    a, b, c = (np.log(np.maximum(flat[at + k], np.float32(1e-12))) for k in (-1, 0, 1))
    curvature = a - 2 * b + c  # < 0: the centre is a strict maximum of the three
    offset = np.clip(np.float32(0.5) * (a - c) / np.minimum(curvature, -1e-12), -0.5, 0.5)
    magnitude = np.exp(b - np.float32(0.25) * (a - c) * offset)
    # Semitones above C1 (MIDI 24), the tuning removed; the nearest semitone gets the
    # magnitude times a cos² taper that is 1 on the semitone and 0 half a semitone away.
    semitones = 12 * np.log2((cols + offset) * np.float32(bin_hz / 440.0)) + np.float32(
        45.0 - tuning
    )
    nearest = np.clip(np.round(semitones), 0, 12 * _PCP_OCTAVES - 1)
    weight = magnitude * np.cos(np.pi * (semitones - nearest)) ** 2
    spectrum = np.bincount(
        rows * 12 * _PCP_OCTAVES + nearest.astype(np.int64),
        weights=weight,
        minlength=n * 12 * _PCP_OCTAVES,
    ).reshape(n, 12 * _PCP_OCTAVES)
    # Each frame in units of its strongest semitone, so that a chord weighs more than a single
    # note of the same loudness (scaling to the strongest pitch class instead measured worse).
    top = spectrum.max(axis=1)
    pcp = spectrum[:, :12].copy()
    for octave in range(1, _PCP_OCTAVES):
        pcp += spectrum[:, 12 * octave : 12 * octave + 12]
    return (pcp / np.where(top > 0.0, top, 1.0)[:, None]).astype(np.float32)


def key_templates() -> np.ndarray:
    """The (2, 24, 12) key templates: plain and with overtones; key ``k`` is tonic ``k % 12``,
    major for ``k < 12``. Each row standardised (zero mean, unit norm) for correlation."""
    plain = np.stack(
        [np.roll(p, t) for p in (KEY_MAJOR_PROFILE, KEY_MINOR_PROFILE) for t in range(12)]
    )
    rich = np.zeros_like(plain)
    for h in range(1, OVERTONES + 1):
        interval = round(12 * np.log2(h)) % 12
        rich += OVERTONE_DECAY ** (h - 1) * np.roll(plain, interval, axis=1)
    templates = np.stack([plain, rich])
    templates -= templates.mean(axis=2, keepdims=True)
    return templates / np.linalg.norm(templates, axis=2, keepdims=True)


_TEMPLATES = key_templates()


def key_scores(pcp: np.ndarray) -> np.ndarray:
    """Score of each of the 24 keys for one or several pitch-class distributions.

    Parameters
    ----------
    pcp : np.ndarray [shape=(12,) or (12, m)]
        Pitch-class distributions (e.g. a mean of ``frame_pitch_classes``), C first.

    Returns
    -------
    np.ndarray [shape=(24,) or (24, m)]
        The mean of the Pearson correlations with the plain and the overtone-rich profile of
        each key (index ``k``: tonic ``k % 12``, major for ``k < 12``); 0 for a flat
        distribution, which favours no key.
    """
    x = np.asarray(pcp, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x, axis=0, keepdims=True)
    x = x / np.where(norm > 1e-9, norm, np.inf)
    return np.asarray(np.einsum("akc,c...->k...", _TEMPLATES, x) / 2.0)


def key_confidence(scores: np.ndarray) -> float:
    """Confidence of the best key, 0..1, from the 24 scores (``key_scores``).

    ``fit * (1 - exp(-margin / CONFIDENCE_MARGIN) / 2)``, with ``margin`` the lead of the best
    score over the second: two keys that tie are each about as likely (half the fit); a lead of
    0.1 gives 0.93 of it. ``fit`` is the best score from ``FIT_FLOOR`` (0) to ``FIT_FULL`` (1):
    noise and drums, which no profile fits, get (nearly) 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size < 2 or not np.all(np.isfinite(scores)):
        return 0.0
    second, best = np.sort(scores)[-2:]
    fit = np.clip((best - FIT_FLOOR) / (FIT_FULL - FIT_FLOOR), 0.0, 1.0)
    doubt = 0.5 * np.exp(-(best - second) / CONFIDENCE_MARGIN)
    return float(fit * (1.0 - doubt))


def _name(k: int) -> tuple[str, str]:
    return PITCH_CLASSES[k % 12], MODES[k // 12]


def estimate_key(pcp: np.ndarray, hop_s: float, duration_s: float) -> Key:
    """The key of a file, its alternatives and its local keys.

    Parameters
    ----------
    pcp : np.ndarray [shape=(12, n_frames)]
        Per-frame pitch-class profile (``frame_pitch_classes``, transposed).
    hop_s : float
        Seconds between frames.
    duration_s : float
        Length of the file; the last segment ends there.

    Returns
    -------
    Key
        C major with confidence 0.0, no candidates and one segment when the profile is empty
        or flat (silence). Noise and unpitched drums do get a best key, with a confidence near
        0 (``key_confidence``).
    """
    pcp = np.asarray(pcp)
    mean = _mean_profile(pcp) if pcp.shape[1:] and pcp.shape[1] else np.zeros(12)
    if pcp.shape[0] != 12 or np.ptp(mean) <= 1e-9:
        return Key("C", "major", 0.0, (), (KeySegment(0.0, duration_s, "C", "major", 0.0),))
    scores = key_scores(mean)
    order = np.argsort(-scores, kind="stable")
    candidates = tuple(KeyCandidate(*_name(int(k)), float(scores[k])) for k in order[:3])
    tonic, mode = _name(int(order[0]))
    segments = local_keys(pcp, hop_s, duration_s)
    return Key(tonic, mode, key_confidence(scores), candidates, segments)


def local_keys(pcp: np.ndarray, hop_s: float, duration_s: float) -> tuple[KeySegment, ...]:
    """Stretches of the file in one key: a Viterbi path over window scores, then each
    stretch's key decided from its own mean profile.

    Every ``STEP_S`` a window of ``WINDOW_S`` centred there is scored (``key_scores``); the
    path maximises the summed scores minus ``SWITCH_PENALTY`` per key change. Stretches shorter
    than ``SEGMENT_MIN_S`` join their longer neighbour; each stretch then gets the key its whole
    mean profile scores best, and neighbours that agree merge. The path's change lags the
    music's (the new key must first earn back the penalty), so each boundary is then moved,
    within a window's length, to where the seconds after it favour the new key over the old
    most (a change-point estimate on 1 s blocks). A file that does not modulate gets one
    segment, in the file's key.
    """
    n = pcp.shape[1]
    step = max(round(STEP_S / hop_s), 1)
    half = max(round(WINDOW_S / (2 * hop_s)), 1)
    centres = np.arange(step // 2, n, step)
    cumulative = _RunningSums(pcp)
    lo = np.clip(centres - half, 0, n)
    hi = np.clip(centres + half, 0, n)
    # One read for both ends: each read works the blocks it touches out again.
    ends = cumulative.at(np.concatenate([hi, lo]))
    windows = ends[:, : hi.size] - ends[:, hi.size :]
    path = _viterbi(key_scores(windows))
    # Boundaries (in frames) where the path changes key; runs as [start, end) frame ranges.
    changes = [
        0,
        *(
            int(c) - step // 2
            for c, p, q in zip(centres[1:], path, path[1:], strict=False)
            if p != q
        ),
        n,
    ]
    runs = [(a, b) for a, b in itertools.pairwise(changes) if b > a]
    runs = _merge_short(runs, round(SEGMENT_MIN_S / hop_s))
    keyed: list[tuple[int, int, int]] = []
    for a, b in runs:
        k = int(np.argmax(key_scores(_mean_profile(pcp, a, b))))
        if keyed and keyed[-1][2] == k:
            keyed[-1] = (keyed[-1][0], b, k)
        else:
            keyed.append((a, b, k))
    for i in range(1, len(keyed)):
        (a1, _, k1), (_, b2, k2) = keyed[i - 1], keyed[i]
        boundary = _change_point(cumulative, keyed[i][0], (a1, b2), (k1, k2), step, 2 * half)
        keyed[i - 1], keyed[i] = (a1, boundary, k1), (boundary, b2, k2)
    segments = []
    for i, (a, b, k) in enumerate(keyed):
        scores = key_scores(_mean_profile(pcp, a, b))
        start = 0.0 if i == 0 else a * hop_s
        end = duration_s if i == len(keyed) - 1 else b * hop_s
        segments.append(KeySegment(start, end, *_name(k), key_confidence(scores)))
    return tuple(segments)


class _RunningSums:
    """The float64 sums of the first ``j`` frames of each row of ``pcp`` (12, frames), for any
    ``j`` in ``0..frames``: ``np.cumsum(pcp, axis=1, dtype=np.float64)`` with a zero column in
    front, read at chosen frames.

    An hour's whole (12, frames + 1) array is 14 MiB, which set the peak of a long file's
    analysis. This keeps the sums at every ``block``-th frame and works a block's sums out
    again when they are read, adding the same numbers in the same order as ``np.cumsum``
    (each sum is the previous one plus the next frame), so they are the same bits.
    """

    def __init__(self, pcp: np.ndarray, block: int = 4096) -> None:
        self._pcp, self._block = pcp, block
        # Column b: the sums of the frames before frame b * block.
        self._carried = np.zeros((pcp.shape[0], pcp.shape[1] // block + 1))
        for b in range(1, self._carried.shape[1]):
            self._carried[:, b] = self._block_sums(b - 1)[:, -1]

    def _block_sums(self, b: int) -> np.ndarray:
        """Column c: the sums of the frames up to and including frame b * block + c."""
        first = b * self._block
        x = self._pcp[:, first : first + self._block].astype(np.float64)
        if b:
            x[:, 0] += self._carried[:, b]
        return np.cumsum(x, axis=1, out=x)

    def at(self, frames: np.ndarray) -> np.ndarray:
        """(12, len(frames)): the sums of the first ``frames[i]`` frames in column i."""
        frames = np.asarray(frames, dtype=np.int64)
        out = np.zeros((self._pcp.shape[0], frames.size))
        last = frames - 1  # the last frame each sum includes (-1: none, the sum is 0)
        blocks = np.where(last >= 0, last // self._block, -1)
        for b in np.unique(blocks[blocks >= 0]):
            picked = blocks == b
            out[:, picked] = self._block_sums(int(b))[:, last[picked] - b * self._block]
        return out


# Frames x 12 up to which a profile's mean is taken in one float64 copy (1 MiB).
_WHOLE_MEAN_ELEMENTS = 1 << 17


def _mean_profile(pcp: np.ndarray, a: int = 0, b: int | None = None) -> np.ndarray:
    """The float64 mean of frames ``a:b`` of each row of ``pcp`` (12, frames).

    Row by row where the frames are many: a float64 copy of an hour's whole profile is
    14 MiB, the largest array of the analysis. Each row's float64 mean is the same pairwise
    sum either way, so the same bits as ``pcp.astype(np.float64)[:, a:b].mean(axis=1)``,
    which a short file's few frames take in one call.
    """
    part = pcp[:, a:b]
    if part.size <= _WHOLE_MEAN_ELEMENTS:
        return part.astype(np.float64).mean(axis=1)
    return np.array([row.astype(np.float64).mean() for row in part])


def _change_point(
    cumulative: _RunningSums,
    boundary: int,
    span: tuple[int, int],
    keys: tuple[int, int],
    step: int,
    reach: int,
) -> int:
    """The frame within ``reach`` of ``boundary`` (and a step inside ``span``) after which the
    ``step``-frame blocks favour ``keys[1]`` over ``keys[0]`` by the largest summed score."""
    lo = max(span[0] + step, boundary - reach)
    hi = min(span[1] - step, boundary + reach)
    edges = np.arange(lo, hi + 1, step)
    if edges.size < 2:
        return boundary
    sums = cumulative.at(edges)
    scores = key_scores(sums[:, 1:] - sums[:, :-1])
    lead = scores[keys[1]] - scores[keys[0]]
    # Gain of a boundary at edges[j]: the lead summed over the blocks from j on.
    gain = np.append(np.cumsum(lead[::-1])[::-1], 0.0)
    return int(edges[int(np.argmax(gain))])


def _viterbi(scores: np.ndarray) -> np.ndarray:
    """Key index per window maximising the summed ``scores`` (24, m) minus
    ``SWITCH_PENALTY`` per change."""
    m = scores.shape[1]
    path = np.zeros(m, dtype=np.int64)
    if m == 0:
        return path
    back = np.zeros((24, m), dtype=np.int64)
    total = scores[:, 0].copy()
    for t in range(1, m):
        best = int(np.argmax(total))
        switch = total[best] - SWITCH_PENALTY
        stay = total >= switch
        back[:, t] = np.where(stay, np.arange(24), best)
        total = np.where(stay, total, switch) + scores[:, t]
    path[-1] = int(np.argmax(total))
    for t in range(m - 1, 0, -1):
        path[t - 1] = back[path[t], t]
    return path


def _merge_short(runs: list[tuple[int, int]], shortest: int) -> list[tuple[int, int]]:
    """Join each run shorter than ``shortest`` frames to its longer neighbour, shortest first."""
    runs = list(runs)
    while len(runs) > 1:
        i = min(range(len(runs)), key=lambda j: runs[j][1] - runs[j][0])
        if runs[i][1] - runs[i][0] >= shortest:
            break
        if i == 0 or (
            i < len(runs) - 1 and runs[i + 1][1] - runs[i + 1][0] > runs[i - 1][1] - runs[i - 1][0]
        ):
            runs[i : i + 2] = [(runs[i][0], runs[i + 1][1])]
        else:
            runs[i - 1 : i + 1] = [(runs[i - 1][0], runs[i][1])]
    return runs


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
    peaks = (z[1:-1] > z[:-2]) & (z[1:-1] >= z[2:])
    # Each peak with its neighbours below and above (row r of ``peaks`` is row r + 1 of x):
    # the stencil below is elementwise, so working it out at the peaks alone gives the same
    # values as over the whole band, at a few percent of the cost.
    rows, cols = np.nonzero(peaks)
    below, centre, above = x[rows, cols], x[rows + 1, cols], x[rows + 2, cols]
    # librosa's stencil: a in float64 from a float32 sum, b a float32 difference halved in
    # float64, the shift stored as float32.
    a = (above + below).astype(np.float64) - 2 * centre.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(np.float32)
    # np.gradient inside the spectrum: central differences in float32.
    dskew = np.float32(0.5) * ((above - below) / np.float32(2.0)) * shift
    pitch = ((rows + lo + shift.astype(np.float64)) * float(sr) / n_fft).astype(np.float32)
    mag = centre + dskew
    voiced = pitch > 0
    if not np.any(voiced):
        return 0.0
    threshold = np.median(mag[voiced])
    chosen = pitch[(mag >= threshold) & voiced]
    if not np.any(chosen > 0):
        return 0.0
    tuning = float(librosa.pitch_tuning(chosen))
    return tuning if np.isfinite(tuning) else 0.0
