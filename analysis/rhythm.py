"""Tempo, its alternatives, beats and onsets from the onset-strength envelope.

The tempo is decided in two steps, because the two ways tempo estimates fail are different:

1. **Which periodicity** (the family of metrically related tempi). The autocorrelation of the
   onset envelope peaks at the beat period and at its multiples (half, third of the tempo);
   its Fourier spectrum peaks at the beat frequency and at its harmonics (double, triple). Their
   product peaks where both agree, at the pulse itself, as in pitch detection (Peeters 2006,
   "Music pitch representation by periodicity measures based on combined temporal and spectral
   representations"; Peeters 2007 for tempo). Weighted by a broad prior, its maximum is a
   member of the right family on every piece of the evaluation set (docs/accuracy.md).
2. **Which metrical level** of that family is the beat: the tempo, its half, third, double,
   triple, and the 2:3 relatives (a 6/8 piece's dotted quarter against its quarter note). Each
   candidate is scored by a small log-linear model of four pieces of evidence: its
   periodicity (the product above), how far it is from the tempi music is usually felt at
   (a log-tempo prior), how many onsets fall in one of its beats (a beat holds one to a
   few notes; Percival & Tzanetakis 2014 decide the octave from such features too), and
   how well bass onsets and treble onsets answer each other one beat apart (the bass drum
   on one beat, the snare on the next; a bass note, then the chord: Goto & Muraoka 1995
   find the beat of drum music so), plus a fixed preference for grouping the strongest
   pulse in twos rather than threes. The
   weights were fitted, as a conditional logit, on the dev half of the evaluation set
   (``scripts/fit_tempo.py``); the softmax of the scores is each candidate's ``weight``, and
   the chosen one's weight is the tempo's confidence.

The beat tracker (librosa's dynamic programme) then runs at the chosen tempo, on the envelope
resampled so that the beat period is a whole number of frames (``track_beats``), so the beats
are spaced by the tempo itself rather than by its period rounded to a frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import librosa
import numpy as np
import scipy.signal

MIN_BPM = 30.0
MAX_BPM = 300.0
# An envelope that never rises above this (mean dB increase over mel bands per frame) has no
# onsets: a steady tone's envelope is rounding noise, whose autocorrelation means nothing.
MIN_ONSET_STRENGTH = 1.0
# Log-tempo grid the periodicity functions are compared on: 1/96 octave (0.7 %) steps.
GRID_STEPS_PER_OCTAVE = 96
# Step 1's prior: broad (one octave) around 120 BPM; it only has to find the family.
FAMILY_PRIOR_BPM = 120.0
FAMILY_PRIOR_OCTAVES = 1.0
# Fourier tempogram: Welch average of 8 s windows (75 % overlap) of the envelope.
SPECTRUM_WINDOW_S = 8.0
# Candidate tempi: these multiples of the family's tempo (step 2).
RATIOS = (1 / 3, 1 / 2, 2 / 3, 1.0, 3 / 2, 2.0, 3.0)
# The ratios that group the family's strongest pulse in threes (see W_TERNARY).
TERNARY = (1 / 3, 2 / 3, 3 / 2, 3.0)
# A candidate's periodicity is read at the strongest grid point within this relative distance.
PEAK_TOLERANCE = 0.03
# Floors of the two periodicity measures (fractions of their maximum over the grid): a click
# track's half tempo has autocorrelation but no spectral line, its double the reverse; the
# floor keeps such a candidate's evidence finite, ranked below one with both.
EVIDENCE_FLOOR = 0.05
# The log-linear model of step 2 (scripts/fit_tempo.py, conditional logit on the dev half):
# score = W_PRIOR * l + W_PRIOR2 * l**2 + W_PERIODICITY * s + W_DENSITY * d + W_DENSITY2 * d**2
#         + W_BACKBEAT * b + W_TERNARY * t
# with l = log2(bpm / 120), s = log of the candidate's periodicity relative to the family's
# best, d = log2(beat period / median inter-onset interval), b = the correlation of the low
# and high band onset envelopes one beat apart (``backbeat``), t = 1 for the TERNARY ratios.
# Within one piece d is l shifted, so W_PRIOR and W_DENSITY only matter through their
# difference and W_DENSITY2: the median inter-onset interval moves the prior's centre.
W_PRIOR = -2.09
W_PRIOR2 = -3.96
W_PERIODICITY = 1.66
W_DENSITY = 2.09
W_DENSITY2 = -0.99
W_BACKBEAT = 3.56
# Not fitted: a prior. Unaccented isochronous pulses are heard in groups of two (Bolton 1894;
# Povel 1981), so a level three times (or 2:3 from) the strongest pulse needs evidence that
# a level twice from it does not; without it (a click track at 240 BPM: every third and
# every second click equally unmarked) the binary grouping wins. Fitting it instead learns
# the share of 3/4 and 6/8 pieces in the evaluation set.
W_TERNARY = -0.5
# The tempo is refined on the autocorrelation peak of up to this many beats (a longer lag
# divides the one-frame quantisation by as many beats).
REFINE_BEATS = 4
# Candidates reported in the document.
MAX_CANDIDATES = 3


# (bpm, weight) pairs, the chosen tempo first.
Candidates = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Rhythm:
    """Tempo in BPM with a 0..1 confidence, alternatives, beat and onset times in seconds.

    ``candidates`` holds up to ``MAX_CANDIDATES`` ``(bpm, weight)`` pairs, the chosen tempo
    first, sorted by weight (the model's probability that each is the beat).
    """

    bpm: float
    confidence: float
    beats_s: np.ndarray
    onsets_s: np.ndarray
    candidates: Candidates = field(default=())


@dataclass(frozen=True)
class Candidate:
    """One metrical level considered for the beat: its tempo and the model's evidence."""

    bpm: float
    log_tempo: float
    periodicity: float
    density: float
    ternary: bool
    backbeat: float = 0.0

    def score(self) -> float:
        """The model's log-odds (up to a constant shared by a file's candidates)."""
        return float(
            W_PRIOR * self.log_tempo
            + W_PRIOR2 * self.log_tempo**2
            + W_PERIODICITY * self.periodicity
            + W_DENSITY * self.density
            + W_DENSITY2 * self.density**2
            + W_BACKBEAT * self.backbeat
            + W_TERNARY * self.ternary
        )


def _grid() -> np.ndarray:
    octaves = np.log2(MAX_BPM / MIN_BPM)
    steps = int(np.ceil(octaves * GRID_STEPS_PER_OCTAVE))
    return MIN_BPM * 2.0 ** (np.arange(steps + 1) / GRID_STEPS_PER_OCTAVE)


GRID_BPM = _grid()


def periodicity(
    onset_env: np.ndarray, frame_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Autocorrelation and Fourier tempogram of an onset envelope, on ``GRID_BPM``.

    A pure function of the envelope's values, remembered for the last few envelopes: a file
    of one section asks it of the same whole envelope twice (the file's tempo, then the
    section's), ~0.4 ms of a 5-second clip. The arrays handed back are read-only.

    Parameters
    ----------
    onset_env : np.ndarray [shape=(n,)]
        Onset strength envelope.
    frame_rate : float
        Envelope frames per second.

    Returns
    -------
    ac : np.ndarray
        Autocorrelation by lag in frames, normalised to 1 at lag 0, up to ``REFINE_BEATS``
        periods of ``MIN_BPM``.
    acf : np.ndarray
        Autocorrelation (normalised to 1 at lag 0) at each grid tempo's period, linearly
        interpolated between lags; may be negative.
    spectrum : np.ndarray
        Mean magnitude spectrum of the envelope at each grid tempo's frequency, scaled so its
        grid maximum is 1.
    """
    values = np.ascontiguousarray(onset_env)
    return _periodicity(values.tobytes(), values.dtype.str, float(frame_rate))


@functools.lru_cache(maxsize=4)
def _periodicity(
    values: bytes, dtype: str, frame_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``periodicity`` of the envelope whose bytes (of ``dtype``) are ``values``."""
    env = np.frombuffer(values, dtype=dtype).astype(np.float64)
    env = env - float(np.mean(env))
    max_lag = min(int(np.ceil(REFINE_BEATS * frame_rate * 60.0 / MIN_BPM)) + 2, env.size)
    ac = librosa.autocorrelate(env, max_size=max_lag)
    ac = ac / ac[0] if ac[0] > 0 else np.zeros_like(ac)
    acf = np.interp(frame_rate * 60.0 / GRID_BPM, np.arange(ac.size), ac, right=0.0)
    window = min(env.size, round(SPECTRUM_WINDOW_S * frame_rate))
    # Zero-padded so that bins are at most 2 % of the slowest tempo apart.
    nfft = max(window, 1 << int(np.ceil(np.log2(frame_rate * 60.0 / (0.02 * MIN_BPM)))))
    freqs, power = welch_power(env, frame_rate, window=window, nfft=nfft)
    spectrum = np.interp(GRID_BPM / 60.0, freqs, np.sqrt(power))
    top = float(np.max(spectrum))
    spectrum = spectrum / top if top > 0 else spectrum
    for array in (ac, acf, spectrum):
        array.flags.writeable = False
    return ac, acf, spectrum


def welch_power(
    env: np.ndarray, fs: float, *, window: int, nfft: int, block: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Welch's power spectrum of ``env``, up to a constant factor, ``block`` segments at a time.

    The same segments as ``scipy.signal.welch(env, fs, "hann", nperseg=window,
    noverlap=3 * window // 4, nfft=nfft)`` (each detrended by its mean, averaged), but without
    scipy's (segments x nfft) arrays: for an hour's envelope those are ~1800 x 8192 complex
    values, a few hundred MB at once, where the worker's whole budget is 400 MB.

    Returns
    -------
    freqs : np.ndarray
        Bin frequencies, Hz.
    power : np.ndarray
        Mean power per bin, proportional to scipy's density (no one-sided doubling, no
        window-power scaling: the tempo spectrum is normalised to its maximum anyway).
    """
    step = window - window * 3 // 4
    segments = np.lib.stride_tricks.sliding_window_view(env, window)[::step]
    taper = _hann(window)
    total = np.zeros(nfft // 2 + 1)
    for b0 in range(0, segments.shape[0], block):
        seg = segments[b0 : b0 + block]
        seg = (seg - seg.mean(axis=1, keepdims=True)) * taper
        spectrum = np.fft.rfft(seg, n=nfft, axis=1)
        total += (spectrum.real**2 + spectrum.imag**2).sum(axis=0)
    return np.fft.rfftfreq(nfft, 1.0 / fs), total / max(segments.shape[0], 1)


@functools.cache
def _hann(window: int) -> np.ndarray:
    """``scipy.signal.get_window("hann", window)``, made once per length (~0.1 ms a call),
    read-only."""
    taper = scipy.signal.get_window("hann", window)
    taper.flags.writeable = False
    return taper


def backbeat(bands: np.ndarray, period: float) -> float:
    """How well bass and treble onsets answer each other one beat apart.

    The mean of two correlation coefficients: the low band's onset envelope against the high
    band's ``period`` frames later, and the high band's against the low band's ``period``
    frames later (the lag interpolated linearly between frames). A groove's bass drum and
    snare alternate at its beat, so it is high there and low at the half and double of the
    beat, where they alternate every half beat or every two beats.

    Parameters
    ----------
    bands : np.ndarray [shape=(2, n)]
        Onset envelopes of the low and the high band (``features.MATRICES["onset_bands"]``).
    period : float
        The beat, frames.

    Returns
    -------
    float
        -1..1; 0 when either band is constant or the envelope is shorter than the lag.
    """
    low, high = bands[0].astype(np.float64), bands[1].astype(np.float64)
    n = low.size - int(np.ceil(period))
    if n < 2:
        return 0.0
    frames = np.arange(n) + period
    later_low = np.interp(frames, np.arange(low.size), low)
    later_high = np.interp(frames, np.arange(high.size), high)
    return 0.5 * (_correlation(low[:n], later_high) + _correlation(high[:n], later_low))


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    norm = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y)) / norm if norm > 0 else 0.0


def tempo_candidates(
    onset_env: np.ndarray,
    frame_rate: float,
    onsets_s: np.ndarray,
    bands: np.ndarray | None = None,
) -> list[Candidate]:
    """The metrical levels the beat may be at, with the evidence the model scores.

    Parameters
    ----------
    onset_env : np.ndarray [shape=(n,)]
        Onset strength envelope.
    frame_rate : float
        Envelope frames per second.
    onsets_s : np.ndarray
        Onset times in seconds (``librosa.onset.onset_detect`` on the same envelope).
    bands : np.ndarray [shape=(2, n)] or None
        Low and high band onset envelopes of the same frames (``backbeat``); without them
        every candidate's ``backbeat`` is 0 and the other evidence decides.

    Returns
    -------
    list[Candidate]
        Empty when the envelope has no periodicity; otherwise the family's tempo and those
        of its ``RATIOS`` multiples that fall in ``MIN_BPM``..``MAX_BPM``.
    """
    if onset_env.size < 4 or float(np.max(onset_env)) < MIN_ONSET_STRENGTH:
        return []
    if float(np.var(onset_env)) <= 0:
        return []
    ac, acf, spectrum = periodicity(onset_env, frame_rate)
    evidence = np.maximum(acf, EVIDENCE_FLOOR) * np.maximum(spectrum, EVIDENCE_FLOOR)
    if float(np.max(acf)) <= EVIDENCE_FLOOR:
        return []
    log_tempo = np.log2(GRID_BPM / FAMILY_PRIOR_BPM)
    prior = np.exp(-0.5 * (log_tempo / FAMILY_PRIOR_OCTAVES) ** 2)
    family = int(np.argmax(evidence * prior))
    best = float(evidence[family])
    intervals = np.diff(onsets_s)
    # Without two onsets, a beat is taken to hold one (no density evidence either way).
    ioi = float(np.median(intervals)) if intervals.size else None
    out: list[Candidate] = []
    for ratio in RATIOS:
        target = GRID_BPM[family] * ratio
        near = np.flatnonzero(
            (target / (1 + PEAK_TOLERANCE) <= GRID_BPM)
            & (target * (1 + PEAK_TOLERANCE) >= GRID_BPM)
        )
        if near.size == 0:
            continue
        i = int(near[np.argmax(evidence[near])])
        if acf[i] <= EVIDENCE_FLOOR and spectrum[i] <= EVIDENCE_FLOOR:
            continue  # no periodicity at all at this level: not a candidate
        bpm = _refine(ac, frame_rate, float(GRID_BPM[i]))
        density = float(np.log2(60.0 / bpm / ioi)) if ioi else 0.0
        out.append(
            Candidate(
                bpm=bpm,
                log_tempo=float(np.log2(bpm / 120.0)),
                periodicity=float(np.log(evidence[i] / best)),
                density=density,
                ternary=ratio in TERNARY,
                backbeat=backbeat(bands, frame_rate * 60.0 / bpm) if bands is not None else 0.0,
            )
        )
    return out


def _refine(ac: np.ndarray, frame_rate: float, bpm: float) -> float:
    """The tempo near ``bpm`` to a fraction of a frame: the autocorrelation peak nearest to
    the longest multiple (up to ``REFINE_BEATS`` beats) of its period that is a peak,
    interpolated by a parabola and divided by the multiple; ``bpm`` when there is none."""
    period = frame_rate * 60.0 / bpm
    for beats in range(REFINE_BEATS, 0, -1):
        target = beats * period
        lo, hi = (
            int(np.floor(target * (1 - PEAK_TOLERANCE))),
            int(np.ceil(target * (1 + PEAK_TOLERANCE))),
        )
        if lo < 1 or hi + 1 >= ac.size:
            continue
        lag = lo + int(np.argmax(ac[lo : hi + 1]))
        if ac[lag] <= 0 or ac[lag] < ac[lag - 1] or ac[lag] < ac[lag + 1]:
            continue
        a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
        return float(60.0 * frame_rate * beats / (lag + offset))
    return bpm


def choose_tempo(
    candidates: list[Candidate],
) -> tuple[float, float, Candidates]:
    """The beat among ``candidates``: (bpm, confidence, top candidates as (bpm, weight)).

    Weights are the softmax of the model's scores; the confidence is the chosen one's.
    """
    if not candidates:
        return 0.0, 0.0, ()
    scores = np.array([c.score() for c in candidates])
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    order = [int(k) for k in np.argsort(-weights, kind="stable")]
    chosen = candidates[order[0]].bpm
    # The half and the double of the chosen tempo are reported whenever they were candidates
    # (had periodicity evidence), whatever their weight: they are the alternatives a reader
    # of a tempo asks about first. The rest by weight.
    octaves = [
        k
        for k in order[1:]
        if any(abs(candidates[k].bpm / chosen - r) < 0.05 * r for r in (0.5, 2.0))
    ]
    shown = [order[0], *octaves, *(k for k in order[1:] if k not in octaves)][:MAX_CANDIDATES]
    shown.sort(key=lambda k: -weights[k])
    top = tuple((candidates[k].bpm, float(weights[k])) for k in shown)
    return chosen, float(weights[order[0]]), top


def estimate_tempo(
    onset_env: np.ndarray,
    sr: int,
    hop_length: int,
    onsets_s: np.ndarray | None = None,
    bands: np.ndarray | None = None,
) -> tuple[float, float]:
    """Global tempo and its confidence (see the module docstring for the method).

    Parameters
    ----------
    onset_env : np.ndarray [shape=(n,)]
        Onset strength envelope.
    sr : int
        Sample rate of the signal the envelope came from.
    hop_length : int
        Samples per envelope frame.
    onsets_s : np.ndarray or None
        Onset times in seconds, detected on ``onset_env`` when not given.
    bands : np.ndarray [shape=(2, n)] or None
        Low and high band onset envelopes (see ``tempo_candidates``).

    Returns
    -------
    bpm : float
        Tempo in beats per minute, 0.0 when there is no periodicity.
    confidence : float
        The model's probability (0..1) that ``bpm`` is the beat and not another metrical
        level.
    """
    bpm, confidence, _ = _tempo(onset_env, sr, hop_length, onsets_s, bands)
    return bpm, confidence


def _tempo(
    onset_env: np.ndarray,
    sr: int,
    hop_length: int,
    onsets_s: np.ndarray | None,
    bands: np.ndarray | None = None,
) -> tuple[float, float, Candidates]:
    if onsets_s is None:
        onsets_s = _onsets(onset_env, sr, hop_length)
    return choose_tempo(tempo_candidates(onset_env, sr / hop_length, onsets_s, bands))


def _onsets(onset_env: np.ndarray, sr: int, hop_length: int) -> np.ndarray:
    if onset_env.size == 0 or float(np.max(onset_env)) < MIN_ONSET_STRENGTH:
        return np.zeros(0)
    onsets = librosa.onset.onset_detect(
        onset_envelope=onset_env, sr=sr, hop_length=hop_length, units="time"
    )
    return np.asarray(onsets, dtype=np.float64)


def rhythm(
    onset_env: np.ndarray, sr: int, *, hop_length: int, bands: np.ndarray | None = None
) -> Rhythm:
    """Tempo, its alternatives, beats and onsets of an onset envelope.

    Parameters
    ----------
    onset_env : np.ndarray [shape=(n,)]
        Onset strength envelope (``features.spectral_features`` makes it from log-mel).
    sr : int
        Sample rate of the analysed signal.
    hop_length : int
        Samples per envelope frame.
    bands : np.ndarray [shape=(2, n)] or None
        Low and high band onset envelopes of the same frames (``features.MATRICES``'
        ``onset_bands``), the tempo's bass-against-treble evidence; left out when None.

    Returns
    -------
    Rhythm
    """
    onsets = _onsets(onset_env, sr, hop_length)
    bpm, confidence, candidates = _tempo(onset_env, sr, hop_length, onsets, bands)
    empty = np.zeros(0)
    if bpm <= 0:
        return Rhythm(0.0, 0.0, empty, empty)
    beats = track_beats(onset_env, sr, hop_length, bpm)
    return Rhythm(bpm, confidence, beats, onsets, candidates=candidates)


def track_beats(onset_env: np.ndarray, sr: int, hop_length: int, bpm: float) -> np.ndarray:
    """Beat times (seconds) by librosa's dynamic programme, spaced by ``bpm`` itself.

    librosa's tracker rounds the beat period to whole frames: at 180 BPM that is 14 frames
    instead of 14.36 in the standard profile (2.5 % fast) and 7 instead of 7.18 in ``fast``.
    The envelope is therefore resampled (linearly) so that the period is a whole number of
    its frames, tracked there, and the beat frames mapped back to seconds.
    """
    frame_rate = sr / hop_length
    period = frame_rate * 60.0 / bpm
    whole = max(1, round(period))
    scale = whole / period  # resampled frames per envelope frame
    positions = np.arange(int(np.floor((onset_env.size - 1) * scale)) + 1) / scale
    resampled = np.interp(positions, np.arange(onset_env.size), onset_env)
    _, frames = librosa.beat.beat_track(
        onset_envelope=resampled,
        sr=sr,
        hop_length=hop_length,
        bpm=frame_rate * 60.0 / whole,
        units="frames",
    )
    return np.asarray(frames, dtype=np.float64) / (scale * frame_rate)
