"""The time grid and shape of a piece: meter, downbeats, tatums, fades, sections and segments.

Everything is estimated from what the feature pass already kept (frame series, per-frame
chroma and MFCC, the 100 ms loudness steps) and the beat grid of ``analysis.rhythm``, with
cheap DSP: a few vector operations per beat or frame, nothing of size frames x frames.
The meter lives in ``analysis.meter``, sections in ``analysis.sections`` and segments in
``analysis.segments``; this module holds the tatum grid, the fades, and ``structure``, which
makes all of them.
docs/result.md describes every field and its method.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from analysis.features import Features
from analysis.loudness import Loudness
from analysis.meter import beat_accents, estimate_meter
from analysis.rhythm import Rhythm
from analysis.schema import ResultFade, ResultMeter, ResultSection, Segment
from analysis.sections import find_sections
from analysis.segments import find_segments, level_db

# A subdivision of the beat is a tatum when the onset envelope's autocorrelation at that
# fraction of the beat period is at least this share of the one at the beat period itself.
TATUM_RATIO = 0.5
# Fades: the level is frame RMS power averaged over this window, in dB.
FADE_SMOOTH_S = 1.0
# The body of the piece: the median smoothed level over the frames with sound. A fade ends
# (or starts) where the level comes within FADE_NEAR_DB of it, extrapolated at the fade's
# slope between FADE_FAR_DB and FADE_NEAR_DB below it to where it reaches the body.
FADE_NEAR_DB = 1.5
FADE_FAR_DB = 4.5
# The extrapolation adds at most this many seconds.
FADE_EXTRAPOLATE_S = 2.0
# A fade lasts at least this long, rises (falls) at least FADE_DEPTH_DB, and at least
# FADE_MONOTONIC of its 0.25 s steps go the fade's way; anything else is an abrupt start.
FADE_MIN_S = 1.0
FADE_DEPTH_DB = 12.0
FADE_MONOTONIC = 0.75
# Frames quieter than this (dB re full scale, smoothed) are silence before or after the sound.
SOUND_DB = -60.0


@dataclass(frozen=True)
class Fade:
    """Where a fade-in ends and a fade-out starts, seconds."""

    end_of_fade_in_s: float
    start_of_fade_out_s: float


@dataclass(frozen=True)
class Structure:
    """The document's structure fields, rounded and typed as ``analysis.schema`` has them."""

    meter: ResultMeter
    downbeats_s: list[float]
    beat_positions: list[int]
    tatums_s: list[float]
    sections: list[ResultSection]
    fade: ResultFade
    segments: list[Segment]


def structure(
    features: Features,
    rhythm: Rhythm,
    *,
    loudness: Loudness,
    sample_rate: int,
    duration_s: float,
    sr: int,
    hop_length: int,
    n_mels: int,
) -> Structure:
    """Meter, downbeats, tatums, sections, fades and segments of a whole file.

    Parameters
    ----------
    features : Features
        The file's frame series and per-frame chroma and MFCC.
    rhythm : Rhythm
        Tempo, beats and onsets estimated on ``features.series["onset_strength"]``.
    loudness : Loudness
        The file's loudness, with its 100 ms step energies (for per-section loudness).
    sample_rate : int
        Native rate of the file (the loudness steps are counted in its samples).
    duration_s : float
        Seconds of the analysis signal.
    sr, hop_length, n_mels : int
        Rate of the analysis signal, samples per frame and mel bands (the profile's).

    Returns
    -------
    Structure
    """
    hop_s = hop_length / sr
    sections = find_sections(
        features,
        beats_s=rhythm.beats_s,
        onsets_s=rhythm.onsets_s,
        bpm=rhythm.bpm,
        loudness=loudness,
        sample_rate=sample_rate,
        duration_s=duration_s,
        sr=sr,
        hop_length=hop_length,
    )
    accents = beat_accents(rhythm.beats_s, features, sr=sr, hop_length=hop_length, n_mels=n_mels)
    meter = estimate_meter(
        rhythm.beats_s, accents, section_starts_s=[s["start_s"] for s in sections[1:]]
    )
    tatums = estimate_tatums(rhythm.beats_s, features.series["onset_strength"], hop_s=hop_s)
    fade = estimate_fades(features.series["rms"], hop_s=hop_s, duration_s=duration_s)
    return Structure(
        meter={"beats_per_bar": meter.beats_per_bar, "confidence": round(meter.confidence, 4)},
        downbeats_s=[round(float(t), 4) for t in meter.downbeats_s],
        beat_positions=[int(p) for p in meter.beat_positions],
        tatums_s=[round(float(t), 4) for t in tatums],
        sections=sections,
        fade={
            "end_of_fade_in_s": round(fade.end_of_fade_in_s, 4),
            "start_of_fade_out_s": round(fade.start_of_fade_out_s, 4),
        },
        segments=find_segments(features, onsets_s=rhythm.onsets_s, hop_s=hop_s),
    )


def estimate_tatums(beats_s: np.ndarray, onset_env: np.ndarray, *, hop_s: float) -> np.ndarray:
    """The grid below the beat: each beat interval divided into 1, 2, 3 or 4 equal parts.

    The division is read from the onset envelope's autocorrelation at a half, a third and a
    quarter of the median beat period: thirds when they are more periodic than halves,
    quarters when halves and quarters both are; a subdivision counts when its
    autocorrelation reaches ``TATUM_RATIO`` of the beat period's. Without any, the tatum is
    the beat.

    Parameters
    ----------
    beats_s : np.ndarray [shape=(n_beats,)]
        Beat times, seconds.
    onset_env : np.ndarray [shape=(n_frames,)]
        Onset strength envelope.
    hop_s : float
        Seconds per frame.

    Returns
    -------
    tatums_s : np.ndarray
        Every beat and the subdivisions between consecutive beats, in order.
    """
    beats_s = np.asarray(beats_s, dtype=np.float64)
    if beats_s.size < 2:
        return beats_s.copy()
    period = float(np.median(np.diff(beats_s))) / hop_s
    k = tatums_per_beat(onset_env, period)
    parts = beats_s[:-1, None] + np.diff(beats_s)[:, None] * (np.arange(k) / k)[None, :]
    return np.concatenate([parts.ravel(), beats_s[-1:]])


def tatums_per_beat(onset_env: np.ndarray, period: float) -> int:
    """1, 2, 3 or 4: how the beat of ``period`` frames is divided (see ``estimate_tatums``)."""
    env = onset_env.astype(np.float64) - float(np.mean(onset_env)) if onset_env.size else None
    if env is None or period < 4 or env.size < 2 * period:
        return 1
    ac = librosa.autocorrelate(env, max_size=int(np.ceil(period)) + 2)
    if ac[0] <= 0:
        return 1
    ac = ac / ac[0]

    def at(lag: float) -> float:
        # The largest value within a frame of the fractional lag: beat periods are not whole
        # frames, and the subdivision's peak falls between them.
        lo, hi = max(1, int(np.floor(lag - 1))), min(ac.size - 1, int(np.ceil(lag + 1)))
        return float(np.max(ac[lo : hi + 1]))

    beat = max(at(period), 1e-3)
    half, third, quarter = at(period / 2) / beat, at(period / 3) / beat, at(period / 4) / beat
    if third >= TATUM_RATIO and third > half:
        return 3
    if half >= TATUM_RATIO:
        return 4 if quarter >= TATUM_RATIO else 2
    return 1


def estimate_fades(rms: np.ndarray, *, hop_s: float, duration_s: float) -> Fade:
    """Where the fade-in ends and the fade-out starts.

    The level is the frame RMS power averaged over ``FADE_SMOOTH_S``, in dB; the body level
    is its median over the frames with sound (above ``SOUND_DB``). From the first sound, the
    level must rise to within ``FADE_NEAR_DB`` of the body over at least ``FADE_MIN_S``,
    ``FADE_DEPTH_DB`` or more, mostly upwards: then the fade-in ends where the slope between
    ``FADE_FAR_DB`` and ``FADE_NEAR_DB`` below the body, extended, reaches the body.
    Otherwise the sound starts abruptly and the fade-in "ends" where the sound starts (0.0
    for a file that starts with sound). The fade-out mirrors it from the last sound; without
    one, it starts where the sound ends (the duration for a file that ends with sound).

    Parameters
    ----------
    rms : np.ndarray [shape=(n_frames,)]
        Frame RMS of the mono signal.
    hop_s : float
        Seconds per frame.
    duration_s : float
        Seconds of the signal.

    Returns
    -------
    Fade
    """
    n = rms.shape[0]
    if n == 0:
        return Fade(0.0, float(duration_s))
    width = max(1, round(FADE_SMOOTH_S / hop_s))
    power = rms.astype(np.float64) ** 2
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) + width - width // 2, 0, n)
    smooth = (cumulative[hi] - cumulative[lo]) / np.maximum(hi - lo, 1)
    level = level_db(np.sqrt(smooth))
    # Where the sound starts and ends is read from the frames themselves, not smeared.
    sound = np.flatnonzero(level_db(rms) > SOUND_DB)
    if sound.size == 0:
        return Fade(0.0, float(duration_s))
    first, last = int(sound[0]), int(sound[-1])
    body = float(np.median(level[sound]))
    fade_in = _fade_end(level[first : last + 1], body, hop_s)
    fade_out = _fade_end(level[first : last + 1][::-1], body, hop_s)
    end_in = first * hop_s + (fade_in if fade_in is not None else 0.0)
    last_s = min((last + 1) * hop_s, duration_s) if last < n - 1 else duration_s
    start_out = last_s - (fade_out if fade_out is not None else 0.0)
    end_in = float(np.clip(end_in, 0.0, duration_s))
    start_out = float(np.clip(start_out, end_in, duration_s))
    return Fade(end_in, start_out)


def _fade_end(level: np.ndarray, body: float, hop_s: float) -> float | None:
    """Seconds from the start of ``level`` to where its rise reaches ``body``, if it fades in."""
    near = np.flatnonzero(level >= body - FADE_NEAR_DB)
    if near.size == 0:
        return None
    t_near = int(near[0])
    if t_near * hop_s < FADE_MIN_S or body - float(level[0]) < FADE_DEPTH_DB:
        return None
    step = max(1, round(0.25 / hop_s))
    rises = np.diff(level[: t_near + 1 : step])
    if rises.size == 0 or float(np.mean(rises > 0)) < FADE_MONOTONIC:
        return None
    below = np.flatnonzero(level[:t_near] < body - FADE_FAR_DB)
    t_far = int(below[-1]) if below.size else 0
    # The same slope for the last FADE_NEAR_DB: from t_near on, as long again as t_far..t_near
    # took per dB.
    extra = (t_near - t_far) * FADE_NEAR_DB / (FADE_FAR_DB - FADE_NEAR_DB)
    extra = min(extra, FADE_EXTRAPOLATE_S / hop_s)
    return (t_near + extra) * hop_s
