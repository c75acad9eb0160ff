"""Perceptual scores 0..1 (energy, danceability, valence, acousticness, instrumentalness,
speechiness, liveness) from the whole-file features, by signal processing alone.

Spotify's audio features of the same names came from undisclosed (largely learned) models;
these are documented measurements instead: each score combines a few cues computed from the
frame series earshot already has (RMS, spectral shape, onset strength, per-frame chroma and
MFCC), the tempo estimate and the loudness meter, mapped to 0..1 by fixed, documented ranges.
Where a method has no evidence for a score the score is ``None`` (JSON null), never a
default: docs/result.md ("Perceptual scores") defines each one and says when it is null.
Every cue is a vectorised pass over the frames, a few milliseconds for an hour of audio.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage

from analysis.features import SILENCE_THRESHOLD_DB, Features
from analysis.loudness import Loudness
from analysis.rhythm import Rhythm
from analysis.schema import ResultScores
from analysis.score_methods import SCORE_METHODS
from analysis.tonal import MAJOR_PROFILE, MINOR_PROFILE

# Less sound than this (seconds of frames above the silence threshold): no score has evidence.
MIN_SOUND_S = 1.0
# Energy: integrated loudness mapped linearly from LOUDNESS_RANGE_LUFS to 0..1; spectral flux
# (mean onset strength, dB per second) saturating as 1 - exp(-flux / FLUX_SCALE); centroid
# mapped on a log axis from BRIGHT_RANGE_HZ to 0..1.
LOUDNESS_RANGE_LUFS = (-40.0, -8.0)
FLUX_SCALE_DB_PER_S = 50.0
BRIGHT_RANGE_HZ = (300.0, 4000.0)
ENERGY_WEIGHTS = (0.5, 0.3, 0.2)
# Danceability: DFA over windows from 0.31 to 8.8 s (Streich & Herrera's range), growing by
# 10 %; the mean DFA exponent maps to regularity 1 at ALPHA_RANGE[0] and 0 at ALPHA_RANGE[1]
# (white noise is 0.5, a smooth swell near 2). The beat strength is weighted by a Gaussian in
# octaves around DANCE_BPM.
DFA_TAU_S = (0.31, 8.8)
DFA_STEP = 1.1
ALPHA_RANGE = (0.3, 1.5)
DANCE_BPM = 120.0
DANCE_OCTAVES = 0.75
# Speechiness: chroma correlation over CHROMA_LAG_S mapped to instability 1 at
# CHROMA_STABILITY[0] and 0 at [1]; the median MFCC change (coefficients 1..12, over
# MFCC_LAG_S, at 128 mel bands) mapped to articulation 0 at ARTICULATION[0], 1 at [1].
CHROMA_LAG_S = 0.1
CHROMA_STABILITY = (0.2, 0.8)
MFCC_LAG_S = 0.046
ARTICULATION = (8.0, 16.0)
REFERENCE_MELS = 128
SPEECH_FOUND = 0.5
# Acousticness: peak-to-loudness ratio (dB) mapped 0..1 over PLR_RANGE_DB, loudness range
# over LRA_RANGE_LU, roll-off 1 at ROLLOFF_RANGE_HZ[0] falling to 0 at [1] on a log axis;
# a fraction CLIPPING_ZERO of clipped samples zeroes the score.
PLR_RANGE_DB = (6.0, 18.0)
LRA_RANGE_LU = (0.0, 8.0)
ROLLOFF_RANGE_HZ = (1500.0, 8000.0)
CLIPPING_ZERO = 0.01
# Valence: needs a key profile correlation of at least TONAL_EVIDENCE; the major-minor
# difference maps to 0.5 +- MODE_SPAN; tempo maps 0..1 over VALENCE_BPM.
TONAL_EVIDENCE = 0.5
MODE_SPAN = 0.2
VALENCE_BPM = (60.0, 160.0)
VALENCE_WEIGHTS = (0.6, 0.2, 0.2)
# Liveness: a frame is audience-like when, over the CROWD_SMOOTH_S around it, the median
# spectral flatness is at least NOISE_FLATNESS and the level's standard deviation at least
# CROWD_FLUCTUATION_DB, its level is within CROWD_LEVEL_DB of the median level of the sound,
# and the onsets around it have no pulse: local_pulse (the onset envelope's highest
# autocorrelation at beat lags PULSE_LAGS_S, in PULSE_WINDOW_S windows every PULSE_STEP_S)
# below CROWD_PULSE_MAX. Runs shorter than CROWD_RUN_S do not count; CROWD_FULL_S of them
# read 1.0.
NOISE_FLATNESS = 0.1
CROWD_SMOOTH_S = 0.5
CROWD_FLUCTUATION_DB = 0.75
CROWD_PULSE_MAX = 0.4
PULSE_WINDOW_S = 4.0
PULSE_STEP_S = 0.5
PULSE_LAGS_S = (0.25, 1.5)
CROWD_LEVEL_DB = 30.0
CROWD_RUN_S = 1.0
CROWD_FULL_S = 10.0

SCORE_NAMES = tuple(SCORE_METHODS)
# Frames per block where a per-frame measure is taken over the matrices (bounds memory).
_BLOCK_FRAMES = 8192


def perceptual_scores(
    features: Features,
    rhythm: Rhythm,
    loudness: Loudness,
    *,
    hop_s: float,
    n_mels: int = REFERENCE_MELS,
) -> ResultScores:
    """The seven perceptual scores of a file (docs/result.md, "Perceptual scores").

    Parameters
    ----------
    features : Features
        Frame series and per-frame chroma / MFCC of the whole file.
    rhythm : Rhythm
        Tempo and its confidence.
    loudness : Loudness
        Integrated loudness, loudness range, peak and clipping.
    hop_s : float
        Seconds between frames.
    n_mels : int
        Mel bands the MFCC were computed from (their scale grows as its square root).

    Returns
    -------
    ResultScores
        Each score a float 0..1 rounded to 4 digits, or ``None`` where its method has no
        evidence (all ``None`` with less than ``MIN_SOUND_S`` of sound).
    """
    series = features.series
    rms = series["rms"].astype(np.float64)
    with np.errstate(divide="ignore"):
        level_db = 20.0 * np.log10(np.maximum(rms, 1e-12))
    sound = level_db >= SILENCE_THRESHOLD_DB
    if np.count_nonzero(sound) * hop_s < MIN_SOUND_S:
        return ResultScores(
            energy=None,
            danceability=None,
            valence=None,
            acousticness=None,
            instrumentalness=None,
            speechiness=None,
            liveness=None,
        )

    centroid = float(np.mean(series["spectral_centroid_hz"][sound]))
    bright = _ramp(math.log(max(centroid, 1.0)), *map(math.log, BRIGHT_RANGE_HZ))
    flux = float(np.mean(series["onset_strength"][sound])) / hop_s
    energy = _energy(loudness, flux, bright)
    danceability = _danceability(rms, series["onset_strength"], rhythm.bpm, hop_s)
    speechiness = _speechiness(features, sound, hop_s, n_mels)
    instrumentalness = 1.0 - speechiness if speechiness >= SPEECH_FOUND else None
    rolloff = float(np.mean(series["spectral_rolloff_hz"][sound]))
    acousticness = _acousticness(loudness, rolloff)
    # A voice's intonation is no key: with speech found, valence has no harmony to read.
    valence = _valence(features, rhythm, bright) if speechiness < SPEECH_FOUND else None
    crowd_s = _crowd_seconds(
        series["spectral_flatness"], level_db, series["onset_strength"], sound, hop_s
    )
    liveness = min(crowd_s / CROWD_FULL_S, 1.0)

    return ResultScores(
        energy=_unit(energy),
        danceability=_unit(danceability),
        valence=_unit(valence),
        acousticness=_unit(acousticness),
        instrumentalness=_unit(instrumentalness),
        speechiness=_unit(speechiness),
        liveness=_unit(liveness),
    )


def dfa_exponent(envelope: np.ndarray, hop_s: float) -> float | None:
    """Mean detrended-fluctuation exponent of an envelope over windows of 0.31 to 8.8 s.

    The envelope's mean-removed running sum is cut into non-overlapping windows of each
    length; a straight line is fitted in each (least squares) and the RMS of the residuals
    over all windows is the fluctuation F. The exponent is the mean slope of log F against
    log window length: ~0.5 for white noise, low when the envelope repeats at a period
    inside the range (a steady beat: F stops growing), high for slow drifts and swells.

    Returns
    -------
    float or None
        ``None`` when fewer than three window lengths fit (three windows each): a file
        shorter than ~3 s.
    """
    x = envelope.astype(np.float64)
    profile = np.cumsum(x - np.mean(x))
    lengths: list[float] = []
    fluctuation: list[float] = []
    tau = DFA_TAU_S[0]
    previous = 0
    while tau <= DFA_TAU_S[1]:
        n = round(tau / hop_s)
        tau *= DFA_STEP
        windows = profile.size // max(n, 1)
        if n < 4 or n == previous or windows < 3:
            continue
        previous = n
        w = profile[: windows * n].reshape(windows, n)
        t = np.arange(n) - (n - 1) / 2.0
        centred = w - w.mean(axis=1, keepdims=True)
        slope_part = (centred @ t) ** 2 / float(t @ t)
        residual = (np.einsum("ij,ij->i", centred, centred) - slope_part) / n
        lengths.append(math.log(n * hop_s))
        fluctuation.append(0.5 * math.log(max(float(np.mean(residual)), 1e-300)))
    if len(lengths) < 3:
        return None
    slopes = np.diff(fluctuation) / np.diff(lengths)
    return float(np.mean(slopes))


def _energy(loudness: Loudness, flux: float, bright: float) -> float:
    """Loudness, spectral flux (dB per second) and brightness (0..1), weighted."""
    loud = _ramp(loudness.integrated_lufs, *LOUDNESS_RANGE_LUFS)
    busy = 1.0 - math.exp(-flux / FLUX_SCALE_DB_PER_S)
    return float(np.dot(ENERGY_WEIGHTS, (loud, busy, bright)))


def _danceability(rms: np.ndarray, onset_env: np.ndarray, bpm: float, hop_s: float) -> float | None:
    """Geometric mean of envelope regularity (DFA) and beat strength near dance tempi."""
    alpha = dfa_exponent(rms, hop_s)
    if alpha is None:
        return None
    regular = _ramp(alpha, ALPHA_RANGE[1], ALPHA_RANGE[0])
    pulse = beat_strength(onset_env, bpm, hop_s) * _tempo_weight(bpm)
    return math.sqrt(regular * pulse)


def beat_strength(onset_env: np.ndarray, bpm: float, hop_s: float) -> float:
    """Autocorrelation of the onset envelope at the beat period, normalised by its energy.

    1.0 when the onsets repeat exactly every beat, near 0 when they do not repeat at that
    period (noise, speech, a pad); 0.0 when there is no tempo. The envelope's mean is removed
    first; the lag is interpolated linearly between frames.
    """
    lag = 60.0 / bpm / hop_s if bpm > 0 else 0.0
    x = onset_env.astype(np.float64)
    if lag < 1.0 or x.size < lag + 2:
        return 0.0
    x = x - np.mean(x)
    n = 1 << int(np.ceil(np.log2(2 * x.size)))
    spectrum = np.fft.rfft(x, n)
    ac = np.fft.irfft(spectrum * np.conj(spectrum), n)[: int(lag) + 2]
    if ac[0] <= 0:
        return 0.0
    k = int(lag)
    at_lag = ac[k] + (lag - k) * (ac[k + 1] - ac[k])
    return min(max(float(at_lag / ac[0]), 0.0), 1.0)


def _speechiness(features: Features, sound: np.ndarray, hop_s: float, n_mels: int) -> float:
    """Chroma instability times MFCC articulation, over the sounding frames."""
    lag = max(1, round(CHROMA_LAG_S / hop_s))
    stability = _chroma_stability(features.matrices["chroma"], lag)
    held = stability[sound[:-lag] & sound[lag:]] if stability.size else stability
    # No two sounding frames 0.1 s apart (isolated clicks): no articulation to speak of.
    instability = _ramp(float(np.mean(held)) if held.size else 0.0, *CHROMA_STABILITY[::-1])
    change = _mfcc_change(features.matrices["mfcc"], sound, max(1, round(MFCC_LAG_S / hop_s)))
    articulation = _ramp(change * math.sqrt(REFERENCE_MELS / n_mels), *ARTICULATION)
    return instability * articulation


def _acousticness(loudness: Loudness, rolloff_hz: float) -> float:
    """Crest, loudness range and a dark spectrum, averaged; clipping scales it down."""
    plr = loudness.peak_dbfs - loudness.integrated_lufs
    dark = _ramp(math.log(max(rolloff_hz, 1.0)), *map(math.log, ROLLOFF_RANGE_HZ[::-1]))
    lra = _ramp(loudness.loudness_range_lu, *LRA_RANGE_LU)
    acoustic = (_ramp(plr, *PLR_RANGE_DB) + lra + dark) / 3.0
    return acoustic * (1.0 - _ramp(loudness.clipping_ratio, 0.0, CLIPPING_ZERO))


def _valence(features: Features, rhythm: Rhythm, bright: float) -> float | None:
    """Mode (major minus minor profile correlation), tempo and brightness, weighted; None
    when neither profile correlates with the mean chroma by ``TONAL_EVIDENCE``."""
    chroma_mean = features.chroma.mean()
    if np.ptp(chroma_mean) <= 1e-9:
        return None
    major = _best_profile_correlation(chroma_mean, _MAJOR_ROTATIONS)
    minor = _best_profile_correlation(chroma_mean, _MINOR_ROTATIONS)
    if max(major, minor) < TONAL_EVIDENCE:
        return None
    mode = _ramp(major - minor, -MODE_SPAN, MODE_SPAN)
    tempo = _ramp(rhythm.bpm, *VALENCE_BPM)
    return float(np.dot(VALENCE_WEIGHTS, (mode, tempo, bright)))


def _chroma_stability(chroma: np.ndarray, lag: int) -> np.ndarray:
    """Pearson correlation of each frame's chroma with the one ``lag`` frames later.

    A held chord or note keeps its pitch classes (near 1); speech glides and noise has no
    stable pitch classes (near 0). Silent frames (all-zero chroma) read 0. Element ``i``
    pairs frames ``i`` and ``i + lag``; empty when the file has no such pair.
    """
    n = chroma.shape[1]
    if n <= lag:
        return np.zeros(0)
    out = np.empty(n - lag)
    # In blocks of frames: float64 copies of an hour's whole chroma would add ~45 MB to the
    # worker's peak. Each block holds its pairs' second frames too (``lag`` more columns).
    for i0 in range(0, n - lag, _BLOCK_FRAMES):
        i1 = min(i0 + _BLOCK_FRAMES, n - lag)
        c = chroma[:, i0 : i1 + lag].astype(np.float64)
        c -= c.mean(axis=0, keepdims=True)
        a, b = c[:, : i1 - i0], c[:, lag:]
        norm = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
        dot = np.einsum("ij,ij->j", a, b)
        np.divide(dot, norm, out=out[i0:i1], where=norm > 1e-12)
        out[i0:i1][norm <= 1e-12] = 0.0
    return out


def _mfcc_change(mfcc: np.ndarray, sound: np.ndarray, lag: int) -> float:
    """Median over sounding frames of the mean |MFCC 1..12 change| over ``lag`` frames."""
    n = mfcc.shape[1]
    if n <= lag:
        return 0.0
    change = np.empty(n - lag)
    for i0 in range(0, n - lag, _BLOCK_FRAMES):  # blocks, as in _chroma_stability
        i1 = min(i0 + _BLOCK_FRAMES, n - lag)
        m = mfcc[1:13, i0 : i1 + lag].astype(np.float64)
        change[i0:i1] = np.abs(m[:, lag:] - m[:, : i1 - i0]).mean(axis=0)
    kept = change[sound[lag:] & sound[:-lag]]
    return float(np.median(kept)) if kept.size else 0.0


def _crowd_seconds(
    flatness: np.ndarray,
    level_db: np.ndarray,
    onset_env: np.ndarray,
    sound: np.ndarray,
    hop_s: float,
) -> float:
    """Seconds in runs of at least ``CROWD_RUN_S`` of audience-like frames.

    A frame is audience-like when, over the ``CROWD_SMOOTH_S`` around it, the median spectral
    flatness is at least ``NOISE_FLATNESS`` (applause and crowd murmur are broadband noise; a
    single hi-hat or fricative is too short to lift a median) and the frame level varies by at
    least ``CROWD_FLUCTUATION_DB`` (standard deviation: claps and voices come and go, where
    steady noise such as hiss, wind or a noise synth does not), its level is within
    ``CROWD_LEVEL_DB`` of the median level of the sound (hiss in a pause is not), and the
    onsets around it have no pulse (``local_pulse`` below ``CROWD_PULSE_MAX``): claps in a
    crowd fall at random, where hi-hats and cymbals, as noisy and as uneven, keep the beat.
    """
    run = max(1, round(CROWD_RUN_S / hop_s))
    if flatness.size < run:
        return 0.0
    width = max(1, round(CROWD_SMOOTH_S / hop_s))
    smooth = scipy.ndimage.median_filter(flatness, size=width)
    level = np.maximum(level_db, SILENCE_THRESHOLD_DB)
    mean = scipy.ndimage.uniform_filter1d(level, width)
    spread = np.sqrt(np.maximum(scipy.ndimage.uniform_filter1d(level * level, width) - mean**2, 0))
    near = level_db >= np.median(level_db[sound]) - CROWD_LEVEL_DB
    noisy = sound & near & (smooth >= NOISE_FLATNESS) & (spread >= CROWD_FLUCTUATION_DB)
    if not noisy.any():
        return 0.0
    noisy &= local_pulse(onset_env, hop_s) < CROWD_PULSE_MAX
    sustained = scipy.ndimage.binary_opening(noisy, structure=np.ones(run, dtype=bool))
    return float(np.count_nonzero(sustained)) * hop_s


def local_pulse(onset_env: np.ndarray, hop_s: float) -> np.ndarray:
    """Per frame, how periodic the onsets are in the ``PULSE_WINDOW_S`` around it, 0..1.

    For windows every ``PULSE_STEP_S``: the highest autocorrelation of the mean-removed onset
    envelope at lags of ``PULSE_LAGS_S`` (beats of 40 to 240 BPM), over its zero-lag value.
    Each frame takes the value of the window centred nearest to it. A drum pattern reads
    0.5-0.8, random claps or noise 0.1-0.3.
    """
    x = onset_env.astype(np.float64)
    width = min(x.size, max(2, round(PULSE_WINDOW_S / hop_s)))
    step = max(1, round(PULSE_STEP_S / hop_s))
    lo = max(1, round(PULSE_LAGS_S[0] / hop_s))
    hi = min(width - 1, round(PULSE_LAGS_S[1] / hop_s))
    if hi < lo:
        return np.zeros(x.size)
    all_windows = np.lib.stride_tricks.sliding_window_view(x, width)[::step]
    n = 1 << int(np.ceil(np.log2(2 * width)))
    pulse = np.empty(all_windows.shape[0])
    # A few hundred windows at a time: an hour's ~7000 windows' spectra at once were ~90 MB.
    for w0 in range(0, all_windows.shape[0], 512):
        windows = all_windows[w0 : w0 + 512]
        windows = windows - windows.mean(axis=1, keepdims=True)
        spectrum = np.fft.rfft(windows, n, axis=1)
        ac = np.fft.irfft(spectrum * np.conj(spectrum), n, axis=1)[:, : hi + 1]
        energy = ac[:, :1]
        ratio = np.divide(ac[:, lo:], energy, out=np.zeros_like(ac[:, lo:]), where=energy > 1e-12)
        pulse[w0 : w0 + windows.shape[0]] = np.clip(ratio.max(axis=1), 0.0, 1.0)
    # Window i is centred on frame i * step + width // 2.
    nearest = np.clip(np.rint((np.arange(x.size) - width // 2) / step), 0, pulse.size - 1)
    return pulse[nearest.astype(np.intp)]


def _rotations(profile: np.ndarray) -> np.ndarray:
    """The 12 rotations of a key profile as rows (read-only)."""
    rotations = np.stack([np.roll(profile, k) for k in range(12)])
    rotations.flags.writeable = False
    return rotations


# Made once, not per file.
_MAJOR_ROTATIONS = _rotations(MAJOR_PROFILE)
_MINOR_ROTATIONS = _rotations(MINOR_PROFILE)


def _best_profile_correlation(chroma_mean: np.ndarray, rotations: np.ndarray) -> float:
    """Highest Pearson correlation of the mean chroma with a profile's 12 ``rotations``."""
    r = np.corrcoef(np.vstack([chroma_mean, rotations]))[0, 1:]
    return float(np.max(r))


def _tempo_weight(bpm: float) -> float:
    if bpm <= 0:
        return 0.0
    return math.exp(-0.5 * (math.log2(bpm / DANCE_BPM) / DANCE_OCTAVES) ** 2)


def _unit(value: float | None) -> float | None:
    """A score as the document holds it: clipped to 0..1, 4 digits; None stays None."""
    return None if value is None else round(min(max(float(value), 0.0), 1.0), 4)


def _ramp(x: float, at0: float, at1: float) -> float:
    """``x`` mapped linearly to 0 at ``at0`` and 1 at ``at1`` (either order), clipped."""
    return min(max((x - at0) / (at1 - at0), 0.0), 1.0)
