"""Spotify-shaped views of a result: ``audio-features`` and ``audio-analysis``.

Spotify closed its audio API to new apps in November 2024; these views answer in the JSON shape
and units of its documented ``AudioFeaturesObject`` and ``AudioAnalysisObject`` so that code
written against them keeps working. They are computed from the stored result document (and the
``segments.json`` beside it), never from audio: pure, and light on purpose (no numpy), because
the API builds them on request. docs/spotify.md says field by field what each value is and how
it differs from Spotify's.

A document made by an older analyzer may lack the structure and score fields; the views then
say so with ``null`` or an empty list rather than a made-up value.

Over 500 lines on purpose: the views' TypedDicts, from which the OpenAPI document's schemas
and descriptions are generated, sit beside the code that fills them field by field, so a field
and its documented meaning change in one place.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict

from pydantic import ConfigDict, Field, with_config

from analysis.profiles import PROFILE_PARAMS
from analysis.score_methods import SCORE_METHODS
from analysis.version import ANALYZER_VERSION

_SCHEMA = ConfigDict(extra="forbid", use_attribute_docstrings=True)

# Pitch-class numbers (Spotify's ``key``): the result document's tonic names, C = 0.
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Below this key confidence no key fits, so ``key`` is -1, Spotify's "no key". By docs/result.md's
# calibration white noise and unpitched drums reach at most ~0.15 (a score of 0.46 at most) and
# the keyed pieces of the evaluation set at least ~0.36 (a score of 0.69 or more, even in a tie).
KEY_MIN_CONFIDENCE = 0.2
# Spotify's time signatures: "3/4" to "7/4".
TIME_SIGNATURES = range(3, 8)
# The time signature given when the meter is 2 beats per bar (outside Spotify's range: two bars
# of 2 are one of 4) or unknown (no beats; then with confidence 0).
DEFAULT_TIME_SIGNATURE = 4
# The perceptual scores, in Spotify's names (the result document's `summary.scores`).
SCORES = (
    "acousticness",
    "danceability",
    "energy",
    "instrumentalness",
    "liveness",
    "speechiness",
    "valence",
)
# Bumped when a view can change for the same stored result: it is part of the views' ETag.
VIEWS_VERSION = "1"

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Score = Annotated[float | None, Field(ge=0.0, le=1.0)]
PitchClass = Annotated[int, Field(ge=-1, le=11)]
TimeSignature = Annotated[int, Field(ge=3, le=7)]
Seconds = Annotated[float, Field(ge=0.0)]


@with_config(_SCHEMA)
class EarshotViewInfo(TypedDict):
    """What earshot adds to Spotify's shape: where the numbers come from."""

    analyzer_version: str
    """Version of the analysis code that made the result (`analyzer_version` of the document)."""
    profile: str
    """The analysis profile: `standard` or `fast`."""
    views_version: str
    """Version of the code that turns a result into these views."""
    beats_per_bar: int
    """The meter as measured, 2..7 beats per bar (0: no beats); `time_signature` is this within
    3..7, else 4."""
    score_methods: dict[str, str]
    """For each perceptual score, one line naming the method that computed it; empty for a
    result made by another analyzer version than the one serving it."""


@with_config(_SCHEMA)
class AudioFeatures(TypedDict):
    """Spotify's audio-features object, computed by earshot (docs/spotify.md)."""

    acousticness: Score
    """Whether the recording is acoustic, 0..1; null when the method has no evidence."""
    analysis_url: str | None
    """Path of this analysis's `audio-analysis` view; null outside the API."""
    danceability: Score
    """How suitable for dancing (tempo, beat strength, regularity), 0..1; null without
    evidence."""
    duration_ms: Annotated[int, Field(ge=0)]
    """Decoded duration in milliseconds (`round(audio.duration_s * 1000)`)."""
    energy: Score
    """Perceived intensity and activity, 0..1; null without evidence."""
    id: str | None
    """The analysis (job) id; null outside the API."""
    instrumentalness: Score
    """Likelihood that there are no vocals, 0..1; null without evidence."""
    key: PitchClass
    """Key as a pitch class (0 = C, 1 = C#, ... 11 = B); -1 when no key was found (key
    confidence below 0.2)."""
    liveness: Score
    """Likelihood of an audience in the recording, 0..1; null without evidence."""
    loudness: float
    """Integrated loudness of the file, LUFS (ITU-R BS.1770 / EBU R 128); floor -70."""
    mode: Annotated[int, Field(ge=0, le=1)]
    """1 major, 0 minor."""
    speechiness: Score
    """Presence of spoken words, 0..1 (above 0.66: speech); null without evidence."""
    tempo: Annotated[float, Field(ge=0.0)]
    """Global tempo, beats per minute; 0 when there is no pulse."""
    time_signature: TimeSignature
    """Beats per bar, 3..7 ("3/4" to "7/4"); 4 when the meter is 2 or unknown."""
    track_href: str | None
    """Path of the analysis (job) resource; null outside the API."""
    type: Literal["audio_features"]
    """Always `audio_features`."""
    uri: str | None
    """`earshot:analysis:<id>`; null outside the API."""
    valence: Score
    """Musical positiveness, 0..1; null without evidence."""
    earshot: EarshotViewInfo
    """What earshot adds: analyzer version, profile, measured meter, score methods."""


@with_config(_SCHEMA)
class AudioAnalysisMeta(TypedDict):
    """How the analysis was made."""

    analyzer_version: str
    """Version of the analysis code."""
    platform: str
    """Always `earshot`."""
    detailed_status: str
    """Always `OK`: a view exists only for a succeeded analysis."""
    status_code: int
    """Always 0 (success)."""
    timestamp: int | None
    """Unix time (s) when the analysis finished; null when not known."""
    analysis_time: float | None
    """Seconds the analysis took; null when not known."""
    input_process: str
    """How the audio was read: container/codec, channels and rates, e.g.
    `ogg/vorbis 2 ch 44100->22050 mono`."""


@with_config(_SCHEMA)
class AudioAnalysisTrack(TypedDict):
    """Whole-track values."""

    num_samples: Annotated[int, Field(ge=0)]
    """Samples of the analysis signal (`duration * analysis_sample_rate`, rounded)."""
    duration: Seconds
    """Decoded duration, seconds."""
    sample_md5: str
    """Always the empty string, as at Spotify (the file's hash is the result's `audio.sha256`)."""
    offset_seconds: int
    """Always 0: the whole file is analysed."""
    window_seconds: int
    """Always 0: the whole file is analysed."""
    analysis_sample_rate: int
    """Rate of the analysis signal, Hz (22050)."""
    analysis_channels: int
    """Always 1: channels are averaged to mono."""
    end_of_fade_in: Seconds | None
    """Where the fade-in ends, seconds (0 without one); null when the result predates fades."""
    start_of_fade_out: Seconds | None
    """Where the fade-out starts, seconds (the duration without one); null when the result
    predates fades."""
    loudness: float
    """Integrated loudness, LUFS; floor -70."""
    tempo: Annotated[float, Field(ge=0.0)]
    """Global tempo, BPM; 0 when there is no pulse."""
    tempo_confidence: Unit
    """Confidence of the tempo, 0..1."""
    time_signature: TimeSignature
    """Beats per bar, 3..7; 4 when the meter is 2 or unknown."""
    time_signature_confidence: Unit
    """Confidence of the meter, 0..1 (0 when unknown)."""
    key: PitchClass
    """Key as a pitch class, -1 when no key was found."""
    key_confidence: Unit
    """Confidence of the key, 0..1."""
    mode: Annotated[int, Field(ge=0, le=1)]
    """1 major, 0 minor."""
    mode_confidence: Unit
    """Confidence of the mode: earshot estimates key and mode together, so the key's."""


@with_config(_SCHEMA)
class AudioAnalysisInterval(TypedDict):
    """A bar, beat or tatum."""

    start: Seconds
    """Start, seconds."""
    duration: Seconds
    """Duration, seconds: to the next one (the last: the median interval, within the file)."""
    confidence: Unit
    """Confidence, 0..1: the tempo's for beats and tatums, the meter's for bars."""


@with_config(_SCHEMA)
class AudioAnalysisSection(TypedDict):
    """A section: a stretch of the piece set apart by harmony, timbre or loudness."""

    start: Seconds
    """Start, seconds."""
    duration: Seconds
    """Duration, seconds."""
    confidence: Unit
    """Confidence of the boundary that starts it, 0..1."""
    loudness: float
    """Integrated loudness of the section, LUFS."""
    tempo: Annotated[float, Field(ge=0.0)]
    """Tempo within the section, BPM."""
    tempo_confidence: Unit
    """The global tempo's confidence (earshot has none per section)."""
    key: PitchClass
    """Key of the section as a pitch class, -1 when no key was found."""
    key_confidence: Unit
    """Confidence of the section's key, 0..1."""
    mode: Annotated[int, Field(ge=-1, le=1)]
    """1 major, 0 minor, -1 when no key was found."""
    mode_confidence: Unit
    """The key's confidence (key and mode are estimated together)."""
    time_signature: TimeSignature
    """The track's time signature (earshot measures one meter per file)."""
    time_signature_confidence: Unit
    """The track's meter confidence."""


@with_config(_SCHEMA)
class AudioAnalysisSegment(TypedDict):
    """A segment: a short, acoustically uniform unit starting at an onset."""

    start: Seconds
    """Start, seconds."""
    duration: Seconds
    """Duration, seconds."""
    confidence: Unit
    """Confidence of the onset that starts it, 0..1."""
    loudness_start: float
    """Level at the start, dB."""
    loudness_max: float
    """Peak level, dB."""
    loudness_max_time: Seconds
    """Time of the peak from the segment's start, seconds."""
    loudness_end: float
    """Level at the end, dB."""
    pitches: Annotated[list[Unit], Field(min_length=12, max_length=12)]
    """12 chroma values, C first, the strongest at 1."""
    timbre: Annotated[list[float], Field(min_length=12, max_length=12)]
    """12 timbre coefficients (earshot's own MFCC basis, docs/result.md)."""


@with_config(_SCHEMA)
class AudioAnalysis(TypedDict):
    """Spotify's audio-analysis object, computed by earshot (docs/spotify.md)."""

    meta: AudioAnalysisMeta
    """How the analysis was made."""
    track: AudioAnalysisTrack
    """Whole-track values."""
    bars: list[AudioAnalysisInterval]
    """Bars, from one downbeat to the next."""
    beats: list[AudioAnalysisInterval]
    """Beats."""
    sections: list[AudioAnalysisSection]
    """Sections, contiguous, covering the file; empty when the result predates them."""
    segments: list[AudioAnalysisSegment]
    """Segments; empty when the result predates them."""
    tatums: list[AudioAnalysisInterval]
    """Tatums: the grid below the beat."""
    earshot: EarshotViewInfo
    """What earshot adds: analyzer version, profile, measured meter, score methods."""


def pitch_class(tonic: str | None, confidence: float) -> int:
    """Spotify's ``key``: the tonic's pitch class, -1 when no key (absent, or confidence below
    ``KEY_MIN_CONFIDENCE``)."""
    if tonic not in PITCH_CLASSES or confidence < KEY_MIN_CONFIDENCE:
        return -1
    return PITCH_CLASSES.index(tonic)


def time_signature(beats_per_bar: int) -> int:
    """Spotify's ``time_signature`` (3..7) of a meter of ``beats_per_bar`` (0, 2..7)."""
    return beats_per_bar if beats_per_bar in TIME_SIGNATURES else DEFAULT_TIME_SIGNATURE


def audio_features(
    document: Mapping[str, Any],
    *,
    id: str | None = None,
    track_href: str | None = None,
    analysis_url: str | None = None,
) -> AudioFeatures:
    """The ``audio-features`` view of a result document.

    Parameters
    ----------
    document : Mapping
        A result document (docs/result.md), as stored.
    id, track_href, analysis_url : str or None
        The analysis's id and the paths of its resource and audio-analysis view, when served by
        the API.
    Returns
    -------
    AudioFeatures
    """
    summary = document["summary"]
    key = summary["key"]
    scores = summary.get("scores") or {}
    return {
        "acousticness": _score(scores, "acousticness"),
        "analysis_url": analysis_url,
        "danceability": _score(scores, "danceability"),
        "duration_ms": round(document["audio"]["duration_s"] * 1000),
        "energy": _score(scores, "energy"),
        "id": id,
        "instrumentalness": _score(scores, "instrumentalness"),
        "key": pitch_class(key["tonic"], key["confidence"]),
        "liveness": _score(scores, "liveness"),
        "loudness": summary["loudness"]["integrated_lufs"],
        "mode": _mode(key["mode"]),
        "speechiness": _score(scores, "speechiness"),
        "tempo": summary["tempo"]["bpm"],
        "time_signature": time_signature(_beats_per_bar(summary)),
        "track_href": track_href,
        "type": "audio_features",
        "uri": f"earshot:analysis:{id}" if id else None,
        "valence": _score(scores, "valence"),
        "earshot": _earshot(document),
    }


def audio_analysis(
    document: Mapping[str, Any],
    segments: Sequence[Mapping[str, Any]] | None,
    *,
    timestamp: int | None = None,
    analysis_time: float | None = None,
) -> AudioAnalysis:
    """The ``audio-analysis`` view of a result document and its segments.

    Parameters
    ----------
    document : Mapping
        A result document (docs/result.md), as stored.
    segments : sequence of Mapping or None
        The analysis's segments (``segments.json``); None when it has none stored.
    timestamp : int or None
        Unix time when the analysis finished.
    analysis_time : float or None
        Seconds the analysis took.
    Returns
    -------
    AudioAnalysis
    """
    audio, summary = document["audio"], document["summary"]
    duration = float(audio["duration_s"])
    sr = PROFILE_PARAMS[document["profile"]].sr
    tempo, key, loudness = summary["tempo"], summary["key"], summary["loudness"]
    meter = summary.get("meter") or {}
    beats_per_bar = _beats_per_bar(summary)
    meter_confidence = _unit(meter.get("confidence", 0.0)) if beats_per_bar else 0.0
    signature = time_signature(beats_per_bar)
    fade = summary.get("fade") or {}
    beats = _intervals(summary["beats_s"], duration, tempo["confidence"])
    beats_end = beats[-1]["start"] + beats[-1]["duration"] if beats else 0.0
    return {
        "meta": {
            "analyzer_version": document["analyzer_version"],
            "platform": "earshot",
            "detailed_status": "OK",
            "status_code": 0,
            "timestamp": timestamp,
            "analysis_time": None if analysis_time is None else round(analysis_time, 5),
            "input_process": (
                f"{audio['format']}/{audio['codec']} {audio['channels']} ch "
                f"{audio['sample_rate']}->{sr} mono"
            ),
        },
        "track": {
            "num_samples": round(duration * sr),
            "duration": round(duration, 5),
            "sample_md5": "",
            "offset_seconds": 0,
            "window_seconds": 0,
            "analysis_sample_rate": sr,
            "analysis_channels": 1,
            "end_of_fade_in": _optional_seconds(fade.get("end_of_fade_in_s")),
            "start_of_fade_out": _optional_seconds(fade.get("start_of_fade_out_s")),
            "loudness": loudness["integrated_lufs"],
            "tempo": tempo["bpm"],
            "tempo_confidence": _unit(tempo["confidence"]),
            "time_signature": signature,
            "time_signature_confidence": meter_confidence,
            "key": pitch_class(key["tonic"], key["confidence"]),
            "key_confidence": _unit(key["confidence"]),
            "mode": _mode(key["mode"]),
            "mode_confidence": _unit(key["confidence"]),
        },
        "bars": _bars(summary.get("downbeats_s") or [], beats_end, meter_confidence),
        "beats": beats,
        "sections": [
            _section(
                s,
                tempo_confidence=tempo["confidence"],
                signature=signature,
                signature_confidence=meter_confidence,
            )
            for s in summary.get("sections") or []
        ],
        "segments": [_segment(s, end=duration) for s in segments or []],
        "tatums": _intervals(summary.get("tatums_s") or [], duration, tempo["confidence"]),
        "earshot": _earshot(document),
    }


def _earshot(document: Mapping[str, Any]) -> EarshotViewInfo:
    # The methods are this code's: they name how a result of this analyzer version was made,
    # and nothing is known here of another version's.
    same = document["analyzer_version"] == ANALYZER_VERSION
    methods = SCORE_METHODS if same else {}
    return {
        "analyzer_version": document["analyzer_version"],
        "profile": document["profile"],
        "views_version": VIEWS_VERSION,
        "beats_per_bar": _beats_per_bar(document["summary"]),
        "score_methods": {name: methods[name] for name in SCORES if name in methods},
    }


def _beats_per_bar(summary: Mapping[str, Any]) -> int:
    meter = summary.get("meter") or {}
    return int(meter.get("beats_per_bar") or 0)


def _score(scores: Mapping[str, Any], name: str) -> float | None:
    value = scores.get(name)
    return None if value is None else _unit(value)


def _mode(mode: str) -> int:
    return 1 if mode == "major" else 0


def _unit(value: float) -> float:
    """``value`` within 0..1 (a rounding step past either end is not a new fact)."""
    return min(max(float(value), 0.0), 1.0)


def _optional_seconds(value: float | None) -> float | None:
    return None if value is None else round(max(float(value), 0.0), 5)


def _intervals(
    times: Sequence[float], end: float, confidence: float
) -> list[AudioAnalysisInterval]:
    """Events at ``times`` as intervals: each lasts until the next; the last one the median
    interval (the only one: to ``end``), never past ``end``."""
    starts = [float(t) for t in times]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    last = statistics.median(gaps) if gaps else math.inf
    unit = _unit(confidence)
    intervals: list[AudioAnalysisInterval] = []
    for i, start in enumerate(starts):
        duration = gaps[i] if i < len(gaps) else min(last, end - start)
        intervals.append(
            {"start": round(start, 5), "duration": round(max(duration, 0.0), 5), "confidence": unit}
        )
    return intervals


def _bars(downbeats: Sequence[float], end: float, confidence: float) -> list[AudioAnalysisInterval]:
    """Bars from each downbeat to the next; the last one ends with the last beat (``end``)."""
    starts = [float(t) for t in downbeats if float(t) < end]
    if not starts:
        return []
    bounds = [*starts[1:], end]
    return [
        {"start": round(a, 5), "duration": round(b - a, 5), "confidence": confidence}
        for a, b in zip(starts, bounds, strict=True)
    ]


def _section(
    section: Mapping[str, Any],
    *,
    tempo_confidence: float,
    signature: int,
    signature_confidence: float,
) -> AudioAnalysisSection:
    key = section["key"]
    pc = pitch_class(key["tonic"], key["confidence"])
    return {
        "start": round(float(section["start_s"]), 5),
        "duration": round(float(section["end_s"]) - float(section["start_s"]), 5),
        "confidence": _unit(section["confidence"]),
        "loudness": section["loudness_lufs"],
        "tempo": section["tempo_bpm"],
        "tempo_confidence": _unit(tempo_confidence),
        "key": pc,
        "key_confidence": _unit(key["confidence"]),
        "mode": -1 if pc < 0 else _mode(key["mode"]),
        "mode_confidence": _unit(key["confidence"]),
        "time_signature": signature,
        "time_signature_confidence": signature_confidence,
    }


def _segment(segment: Mapping[str, Any], *, end: float) -> AudioAnalysisSegment:
    start = float(segment["start_s"])
    # The last segment runs to the end of its last frame, which may lie a hop past the end
    # of the file: here nothing lasts past it.
    duration = min(float(segment["duration_s"]), max(end - start, 0.0))
    return {
        "start": round(start, 5),
        "duration": round(duration, 5),
        "confidence": _unit(segment["confidence"]),
        "loudness_start": segment["loudness_start_db"],
        "loudness_max": segment["loudness_max_db"],
        "loudness_max_time": segment["loudness_max_time_s"],
        "loudness_end": segment["loudness_end_db"],
        "pitches": [_unit(v) for v in segment["pitches"]],
        "timbre": list(segment["timbre"]),
    }
