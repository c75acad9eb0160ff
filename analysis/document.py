"""The result document: the JSON a job returns, built from the pieces of an analysis.

Both pipelines end here (``analyze_file`` and the chunked ``merge`` call ``describe``), so a
file gets the same document whichever way it was analysed: every whole-file estimate (tempo,
key, structure, scores) is made in ``describe`` from the streamed features. Its fields are
described in docs/result.md.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.decode import AudioInfo
from analysis.features import SERIES, SILENCE_THRESHOLD_DB, Features
from analysis.loudness import DB_FLOOR, Loudness
from analysis.perceptual import perceptual_scores
from analysis.profiles import get_profile
from analysis.rhythm import Rhythm, rhythm
from analysis.schema import MeanStd, ResultDocument, ResultScores, ResultSummary, Segment
from analysis.structure import Structure, structure
from analysis.tonal import PITCH_CLASSES, estimate_key
from analysis.version import ANALYZER_VERSION


@dataclass(frozen=True)
class Analysis:
    """The result of ``analyze_file`` (and of the chunked ``merge``).

    Attributes
    ----------
    document : ResultDocument
        JSON-serialisable result document, a plain dict typed by ``analysis.schema`` (see
        docs/result.md); every float is finite.
    frames : dict[str, np.ndarray]
        Frame-level series, each 1-D float32 of the same length, named in
        ``document["frames"]["names"]``.
    hop_s : float
        Seconds between consecutive frames; frame ``i`` is centred at ``i * hop_s``.
    segments : list[Segment]
        Short acoustically uniform units (docs/result.md, "Segments"), delivered beside the
        document as ``segments.json``: a long file has thousands.
    csv_rows : tuple of bytes
        The rows of ``frames.csv`` (``export.csv_rows``) when the chunks of a chunked analysis
        formatted them, in frame order; empty when ``export.frames_to_csv`` formats them.
    npz : bytes or None
        ``frames.npz`` when the chunked merge made it (``export.series_to_npz``); None when
        ``export.frames_to_npz`` makes it.
    """

    document: ResultDocument
    frames: dict[str, np.ndarray]
    hop_s: float
    segments: list[Segment] = field(default_factory=list)
    csv_rows: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    npz: bytes | None = field(default=None, repr=False, compare=False)


def describe(
    info: AudioInfo,
    *,
    sha256: str,
    duration_s: float,
    profile: str,
    features: Features,
    loudness: Loudness,
    progress: Callable[[str, float], None] | None = None,
) -> Analysis:
    """Every whole-file estimate from the streamed features, and the ``Analysis`` of the file.

    Parameters
    ----------
    info, sha256, duration_s, profile, features, loudness
        As for ``result_document``.
    progress : callable(stage, fraction) or None
        Told when rhythm is done (at 0.95 overall).

    Returns
    -------
    Analysis
    """
    params = get_profile(profile)
    rhy = rhythm(
        features.series["onset_strength"],
        params.sr,
        hop_length=params.hop_length,
        bands=features.matrices.get("onset_bands"),
    )
    if progress is not None:
        progress("rhythm", 0.95)
    shape = structure(
        features,
        rhy,
        loudness=loudness,
        sample_rate=info.sample_rate,
        duration_s=duration_s,
        sr=params.sr,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
    )
    scores = perceptual_scores(
        features, rhy, loudness, hop_s=params.hop_length / params.sr, n_mels=params.n_mels
    )
    document = result_document(
        info,
        sha256=sha256,
        duration_s=duration_s,
        profile=profile,
        features=features,
        rhythm=rhy,
        loudness=loudness,
        scores=scores,
        structure=shape,
    )
    return Analysis(
        document=document,
        frames=features.series,
        hop_s=params.hop_length / params.sr,
        segments=shape.segments,
    )


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (the document's ``audio.sha256``), read 1 MiB at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def result_document(
    info: AudioInfo,
    *,
    sha256: str,
    duration_s: float,
    profile: str,
    features: Features,
    rhythm: Rhythm,
    loudness: Loudness,
    scores: ResultScores,
    structure: Structure,
) -> ResultDocument:
    """The JSON-serialisable result document of one analysed file.

    Parameters
    ----------
    info : AudioInfo
        What the file's header said (rate, channels, format, codec).
    sha256 : str
        Hex SHA-256 of the file (``file_sha256``).
    duration_s : float
        Seconds of the analysis signal.
    profile : str
        The profile the features were computed with (one of ``PROFILES``).
    features : Features
        Frame series and moments of the whole file.
    rhythm : Rhythm
        Tempo, beats and onsets estimated on ``features.series["onset_strength"]``.
    loudness : Loudness
        Loudness and levels of the whole file.
    scores : ResultScores
        Perceptual scores (``analysis.perceptual.perceptual_scores``).
    structure : Structure
        Meter, downbeats, tatums, sections and fades (``analysis.structure``).

    Returns
    -------
    ResultDocument
        A plain dict of the shape ``analysis.schema`` types; every float finite and rounded
        as docs/result.md states.
    """
    params = get_profile(profile)
    series = features.series
    rms = series["rms"].astype(np.float64)
    with np.errstate(divide="ignore"):
        rms_db = np.maximum(20.0 * np.log10(rms), DB_FLOOR)
    silent = rms_db < SILENCE_THRESHOLD_DB
    voiced = ~silent
    key = estimate_key(
        features.matrices["pcp"], params.hop_length / params.sr, duration_s=duration_s
    )
    summary: ResultSummary = {
        "tempo": {
            "bpm": round(rhythm.bpm, 3),
            "confidence": round(rhythm.confidence, 4),
            "candidates": [
                {"bpm": round(bpm, 3), "weight": round(weight, 4)}
                for bpm, weight in rhythm.candidates
            ],
        },
        "beats_s": _floats(rhythm.beats_s, 4),
        "key": {
            "tonic": key.tonic,
            "mode": key.mode,
            "confidence": round(key.confidence, 4),
            "candidates": [
                {"tonic": c.tonic, "mode": c.mode, "score": round(_finite(c.score), 4)}
                for c in key.candidates
            ],
            "segments": [
                {
                    "start_s": round(s.start_s, 3),
                    "end_s": round(s.end_s, 3),
                    "tonic": s.tonic,
                    "mode": s.mode,
                    "confidence": round(s.confidence, 4),
                }
                for s in key.segments
            ],
        },
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
        "onset_rate_per_s": round(rhythm.onsets_s.size / duration_s, 4) if duration_s else 0.0,
        "silence_ratio": round(float(np.mean(silent)) if silent.size else 1.0, 6),
        "scores": scores,
        "meter": structure.meter,
        "downbeats_s": structure.downbeats_s,
        "beat_positions": structure.beat_positions,
        "tatums_s": structure.tatums_s,
        "sections": structure.sections,
        "fade": structure.fade,
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


def _stats(x: np.ndarray) -> MeanStd:
    if x.size == 0:
        return {"mean": 0.0, "std": 0.0}
    return {"mean": round(_finite(np.mean(x)), 6), "std": round(_finite(np.std(x)), 6)}


def _finite(value: Any) -> float:
    v = float(value)
    return v if math.isfinite(v) else 0.0


def _floats(values: np.ndarray, digits: int = 6) -> list[float]:
    return [round(_finite(v), digits) for v in values]
