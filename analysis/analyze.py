"""``analyze_file``: decode once, measure loudness on the way, then every feature from one STFT."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.decode import AudioInfo, AudioSource, downmix, mono_resampler, open_audio
from analysis.errors import UnknownProfile
from analysis.features import SERIES, SILENCE_THRESHOLD_DB, FeatureExtractor, Features
from analysis.limits import Limits
from analysis.loudness import DB_FLOOR, Loudness, LoudnessMeter
from analysis.rhythm import Rhythm, rhythm
from analysis.tonal import PITCH_CLASSES, estimate_key
from analysis.version import ANALYZER_VERSION

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Profile:
    """Analysis parameters of one named profile."""

    sr: int
    n_fft: int
    hop_length: int
    n_mels: int


_PROFILES = {
    # librosa's conventions.
    "standard": Profile(sr=22050, n_fft=2048, hop_length=512, n_mels=128),
    # Half the frames and mel bands: roughly half the feature cost, coarser beat times.
    "fast": Profile(sr=22050, n_fft=2048, hop_length=1024, n_mels=64),
}
PROFILES: tuple[str, ...] = tuple(_PROFILES)

# Share of the overall progress each stage ends at. Features are computed while decoding, so
# "decode" covers most of the work; "features" is the last chunk.
_DECODE_END = 0.85
_FEATURES_END = 0.9


@dataclass(frozen=True)
class Analysis:
    """The result of ``analyze_file``.

    Attributes
    ----------
    document : dict
        JSON-serialisable result document (see docs/result.md); every float is finite.
    frames : dict[str, np.ndarray]
        Frame-level series, each 1-D float32 of the same length, named in
        ``document["frames"]["names"]``.
    hop_s : float
        Seconds between consecutive frames; frame ``i`` is centred at ``i * hop_s``.
    """

    document: dict[str, Any]
    frames: dict[str, np.ndarray]
    hop_s: float


class _Reporter:
    """Forward strictly increasing overall fractions to the caller's callback."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.last = -1.0

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.callback is not None and fraction > self.last:
            self.last = fraction
            # Exceptions propagate unchanged: that is how a worker cancels a job.
            self.callback(stage, fraction)


def analyze_file(
    path: str | Path,
    *,
    profile: str = "standard",
    limits: Limits = Limits(),  # noqa: B008 - frozen, so a shared default is safe
    progress: Progress | None = None,
) -> Analysis:
    """Analyse one audio file on local disk.

    Parameters
    ----------
    path : str or Path
        The audio file; its decoder is chosen by content, not by extension.
    profile : str
        One of ``PROFILES``.
    limits : Limits
        Bounds on duration, rate, channels and decoded size, checked from the header and
        again while decoding.
    progress : callable(stage, fraction) or None
        Called with a stage name and the overall fraction done (strictly increasing, ending
        at 1.0). An exception it raises propagates out of ``analyze_file`` unchanged.

    Returns
    -------
    Analysis

    Raises
    ------
    InvalidAudio
        A subclass with a stable ``code`` when the file is unreadable, empty or over a limit.
    UnknownProfile
        When ``profile`` is not in ``PROFILES``.
    """
    if profile not in _PROFILES:
        raise UnknownProfile(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    params = _PROFILES[profile]
    report = _Reporter(progress)
    path = Path(path)
    report("decode", 0.0)
    with open_audio(path, limits=limits) as source:
        info = source.info
        features, loudness, duration_s = _decode_and_extract(source, params, report)
    sha256 = _sha256(path)
    rhy = rhythm(features.series["onset_strength"], params.sr, hop_length=params.hop_length)
    report("rhythm", 0.95)
    document = _document(info, sha256, duration_s, profile, params, features, rhy, loudness)
    report("done", 1.0)
    return Analysis(document=document, frames=features.series, hop_s=params.hop_length / params.sr)


def _decode_and_extract(
    source: AudioSource, params: Profile, report: _Reporter
) -> tuple[Features, Loudness, float]:
    """One pass over the file: native blocks feed the loudness meter, and their mono downmix,
    resampled, feeds the STFT feature pass. The signal itself is never held whole."""
    info = source.info
    sr = params.sr
    meter = LoudnessMeter(info.sample_rate, info.channels)
    extractor = FeatureExtractor(
        sr, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels
    )
    resample = mono_resampler(info.sample_rate, sr)
    decoded = 0
    for block in source.blocks():
        meter.add(block)
        extractor.push(resample(downmix(block)))
        decoded += block.shape[0]
        if info.frames:
            report("decode", _DECODE_END * min(decoded / info.frames, 1.0))
    extractor.push(resample(None))
    report("features", _DECODE_END)
    features = extractor.finish()
    report("features", _FEATURES_END)
    return features, meter.result(), extractor.n_samples / sr


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"mean": 0.0, "std": 0.0}
    return {"mean": round(_finite(np.mean(x)), 6), "std": round(_finite(np.std(x)), 6)}


def _finite(value: Any) -> float:
    v = float(value)
    return v if math.isfinite(v) else 0.0


def _floats(values: np.ndarray, digits: int = 6) -> list[float]:
    return [round(_finite(v), digits) for v in values]


def _document(
    info: AudioInfo,
    sha256: str,
    duration_s: float,
    profile: str,
    params: Profile,
    features: Features,
    rhy: Rhythm,
    loudness: Loudness,
) -> dict[str, Any]:
    series = features.series
    rms = series["rms"].astype(np.float64)
    with np.errstate(divide="ignore"):
        rms_db = np.maximum(20.0 * np.log10(rms), DB_FLOOR)
    silent = rms_db < SILENCE_THRESHOLD_DB
    voiced = ~silent
    key = estimate_key(features.chroma.mean())
    summary: dict[str, Any] = {
        "tempo": {"bpm": round(rhy.bpm, 3), "confidence": round(rhy.confidence, 4)},
        "beats_s": _floats(rhy.beats_s, 4),
        "key": {"tonic": key.tonic, "mode": key.mode, "confidence": round(key.confidence, 4)},
        "loudness": {
            "integrated_lufs": round(loudness.integrated_lufs, 3),
            "loudness_range_lu": round(loudness.loudness_range_lu, 3),
            "peak_dbfs": round(loudness.peak_dbfs, 3),
            "clipping_ratio": round(loudness.clipping_ratio, 8),
            "rms_mean_db": round(_finite(np.mean(rms_db)), 3),
        },
        "rms": _stats(rms),
        "zero_crossing_rate": _stats(series["zero_crossing_rate"]),
        "spectral_centroid_hz": _stats(series["spectral_centroid_hz"][voiced]),
        "spectral_bandwidth_hz": _stats(series["spectral_bandwidth_hz"][voiced]),
        "spectral_rolloff_hz": _stats(series["spectral_rolloff_hz"][voiced]),
        "spectral_flatness": _stats(series["spectral_flatness"][voiced]),
        "spectral_contrast_db": {
            "mean": _floats(features.contrast.mean()),
            "std": _floats(features.contrast.std()),
        },
        "mfcc": {"mean": _floats(features.mfcc.mean()), "std": _floats(features.mfcc.std())},
        "chroma": {
            "pitch_classes": list(PITCH_CLASSES),
            "mean": _floats(features.chroma.mean()),
            "tuning_semitones": round(features.tuning, 4),
        },
        "onset_rate_per_s": round(rhy.onsets_s.size / duration_s, 4) if duration_s else 0.0,
        "silence_ratio": round(float(np.mean(silent)) if silent.size else 1.0, 6),
    }
    return {
        "analyzer_version": ANALYZER_VERSION,
        "profile": profile,
        "audio": {
            "duration_s": round(duration_s, 6),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "format": info.format,
            "codec": info.codec,
            "sha256": sha256,
        },
        "summary": summary,
        "frames": {
            "hop_s": params.hop_length / params.sr,
            "names": list(SERIES),
            "count": int(series["rms"].shape[0]),
        },
    }
