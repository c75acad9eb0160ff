"""Tempo, beats and onsets from the onset-strength envelope."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

MIN_BPM = 30.0
MAX_BPM = 300.0
# Where octave ambiguity is resolved to: most music is felt between these.
PREFERRED_BPM = (70.0, 180.0)
# An octave-related candidate inside PREFERRED_BPM wins if its periodicity is at least this
# fraction of the strongest one's.
OCTAVE_RATIO = 0.5
# An envelope that never rises above this (mean dB increase over mel bands per frame) has no
# onsets: a steady tone's envelope is rounding noise, whose autocorrelation means nothing.
MIN_ONSET_STRENGTH = 1.0
# Centre and width (in octaves) of the log-normal tempo prior, librosa's defaults.
PRIOR_BPM = 120.0
PRIOR_OCTAVES = 1.0


@dataclass(frozen=True)
class Rhythm:
    """Tempo in BPM with a 0..1 periodicity confidence, beat and onset times in seconds."""

    bpm: float
    confidence: float
    beats_s: np.ndarray
    onsets_s: np.ndarray


def estimate_tempo(onset_env: np.ndarray, sr: int, hop_length: int) -> tuple[float, float]:
    """Global tempo from the autocorrelation of the whole onset envelope.

    One autocorrelation of the envelope is the mean of librosa's tempogram over time, without
    holding a (384, n_frames) tempogram in memory. Peaks are weighted by a log-normal prior
    around 120 BPM, refined to sub-frame lag by parabolic interpolation, and folded by an
    octave into 70-180 BPM when that octave is nearly as periodic.

    Parameters
    ----------
    onset_env : np.ndarray [shape=(n,)]
        Onset strength envelope.
    sr : int
        Sample rate of the signal the envelope came from.
    hop_length : int
        Samples per envelope frame.

    Returns
    -------
    bpm : float
        Tempo in beats per minute, 0.0 when there is no periodicity.
    confidence : float
        Normalised autocorrelation (0..1) at the chosen beat period.
    """
    frame_rate = sr / hop_length
    env = onset_env.astype(np.float64) - float(np.mean(onset_env))
    max_lag = int(np.ceil(frame_rate * 60.0 / MIN_BPM)) + 2
    if env.size < 4 or float(np.max(onset_env)) < MIN_ONSET_STRENGTH:
        return 0.0, 0.0
    ac = librosa.autocorrelate(env, max_size=min(max_lag, env.size))
    if ac[0] <= 0:
        return 0.0, 0.0
    ac = ac / ac[0]
    lags = np.arange(ac.size)
    min_lag = max(1, int(np.floor(frame_rate * 60.0 / MAX_BPM)))
    peaks = [
        lag
        for lag in range(min_lag, ac.size - 1)
        if ac[lag] > 0 and ac[lag] >= ac[lag - 1] and ac[lag] > ac[lag + 1]
    ]
    if not peaks:
        return 0.0, 0.0
    with np.errstate(divide="ignore"):
        bpm_of_lag = np.where(lags > 0, 60.0 * frame_rate / np.maximum(lags, 1), np.inf)
    prior = np.exp(-0.5 * (np.log2(bpm_of_lag / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    best = max(peaks, key=lambda lag: ac[lag] * prior[lag])

    low, high = PREFERRED_BPM
    if not low <= bpm_of_lag[best] <= high:
        for factor in (2.0, 0.5):
            octave = _nearest_peak(peaks, best * factor)
            if octave is not None and low <= bpm_of_lag[octave] <= high:
                if ac[octave] >= OCTAVE_RATIO * ac[best]:
                    best = octave
                break
    period = _refine(ac, best)
    return float(60.0 * frame_rate / period), float(np.clip(ac[best], 0.0, 1.0))


def _nearest_peak(peaks: list[int], target: float) -> int | None:
    near = [p for p in peaks if abs(p - target) <= max(1.0, 0.06 * target)]
    return min(near, key=lambda p: abs(p - target)) if near else None


def _refine(ac: np.ndarray, lag: int) -> float:
    a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
    denom = a - 2 * b + c
    if denom >= 0:
        return float(lag)
    return float(lag + 0.5 * (a - c) / denom)


def rhythm(onset_env: np.ndarray, sr: int, *, hop_length: int) -> Rhythm:
    """Tempo, beats and onsets of an onset envelope.

    Parameters
    ----------
    onset_env : np.ndarray [shape=(n,)]
        Onset strength envelope (``features.spectral_features`` makes it from log-mel).
    sr : int
        Sample rate of the analysed signal.
    hop_length : int
        Samples per envelope frame.

    Returns
    -------
    Rhythm
    """
    bpm, confidence = estimate_tempo(onset_env, sr, hop_length)
    empty = np.zeros(0)
    if bpm <= 0:
        return Rhythm(0.0, 0.0, empty, empty)
    _, beats = librosa.beat.beat_track(
        onset_envelope=onset_env, sr=sr, hop_length=hop_length, bpm=bpm, units="time"
    )
    onsets = librosa.onset.onset_detect(
        onset_envelope=onset_env, sr=sr, hop_length=hop_length, units="time"
    )
    return Rhythm(bpm, confidence, np.asarray(beats, dtype=np.float64), np.asarray(onsets))
