"""The result document's shape as types: what ``result_document()`` builds and the API serves.

``TypedDict``s, so the document stays the plain dict it has always been (its JSON is unchanged)
while mypy checks the builder against them and pydantic turns them into the JSON Schema of the
API's OpenAPI document. docs/result.md explains each field at length; the one-line docstrings
here become the schema's descriptions. Light on purpose: the API imports this module, and it
imports neither numpy nor librosa.
"""

from __future__ import annotations

from typing import TypedDict

from pydantic import ConfigDict, with_config

# Closed objects (``additionalProperties: false``), and each field's docstring as its
# description in the JSON Schema.
_SCHEMA = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@with_config(_SCHEMA)
class MeanStd(TypedDict):
    """Mean and standard deviation over frames."""

    mean: float
    """Mean over frames."""
    std: float
    """Standard deviation over frames."""


@with_config(_SCHEMA)
class MeanStdVector(TypedDict):
    """Per-coefficient mean and standard deviation over frames."""

    mean: list[float]
    """Mean over frames, one value per coefficient or band."""
    std: list[float]
    """Standard deviation over frames, one value per coefficient or band."""


@with_config(_SCHEMA)
class ResultAudio(TypedDict):
    """What was decoded."""

    duration_s: float
    """Decoded duration in seconds (measured, not the header's claim)."""
    sample_rate: int
    """Native sample rate of the file, Hz."""
    channels: int
    """Native channel count."""
    format: str
    """Container, as found by content (`wav`, `flac`, `ogg`, `mp3`, `mp4`, ...)."""
    codec: str
    """Encoding (`pcm_16`, `vorbis`, `opus`, `mpeg_layer_iii`, `aac`, ...)."""
    sha256: str
    """SHA-256 of the file's bytes, hex."""


@with_config(_SCHEMA)
class ResultTempo(TypedDict):
    """Global tempo."""

    bpm: float
    """Global tempo, beats per minute; 0.0 when there is no pulse."""
    confidence: float
    """How strongly periodic the onsets are at the beat period, 0..1."""


@with_config(_SCHEMA)
class ResultKey(TypedDict):
    """Estimated key."""

    tonic: str
    """One of C C# D D# E F F# G G# A A# B (sharps only)."""
    mode: str
    """`major` or `minor`."""
    confidence: float
    """Calibrated 0..1 from the lead of the best key over the second; 0 without pitch."""
    candidates: list[ResultKeyCandidate]
    """The best 3 keys, best first; the first is `tonic`/`mode`. Empty without pitch."""
    segments: list[ResultKeySegment]
    """Local keys over time, contiguous and covering the file; one when it does not modulate."""


@with_config(_SCHEMA)
class ResultKeyCandidate(TypedDict):
    """A key and how well it fits."""

    tonic: str
    """One of C C# D D# E F F# G G# A A# B (sharps only)."""
    mode: str
    """`major` or `minor`."""
    score: float
    """Mean correlation of the key's profiles with the pitch-class profile, -1..1."""


@with_config(_SCHEMA)
class ResultKeySegment(TypedDict):
    """A stretch of the file in one key."""

    start_s: float
    """Start, seconds; the first segment starts at 0."""
    end_s: float
    """End, seconds; the last segment ends at the duration."""
    tonic: str
    """One of C C# D D# E F F# G G# A A# B (sharps only)."""
    mode: str
    """`major` or `minor`."""
    confidence: float
    """As the file's key confidence, from this stretch alone, 0..1."""


@with_config(_SCHEMA)
class ResultLoudness(TypedDict):
    """Loudness and level of the whole file."""

    integrated_lufs: float
    """Integrated loudness (ITU-R BS.1770-4 / EBU R 128), LUFS; floor -70.0."""
    loudness_range_lu: float
    """Loudness range (EBU Tech 3342), LU."""
    peak_dbfs: float
    """Sample peak over all channels at the native rate, dBFS; floor -120.0."""
    clipping_ratio: float
    """Fraction of samples at or above 0.999 of full scale, 0..1."""
    rms_mean_db: float
    """Mean over frames of the frame RMS, dB re full scale; floor -120."""


@with_config(_SCHEMA)
class ResultChroma(TypedDict):
    """Pitch-class content."""

    pitch_classes: list[str]
    """The 12 pitch-class names, in the order of `mean`: C first."""
    mean: list[float]
    """12 values: mean over non-silent frames of the STFT chroma."""
    tuning_semitones: float
    """Tuning deviation from A440, in fractions of a semitone."""


@with_config(_SCHEMA)
class ResultSummary(TypedDict):
    """Whole-file features."""

    tempo: ResultTempo
    """Global tempo and its confidence."""
    beats_s: list[float]
    """Beat times in seconds; empty when `tempo.bpm` is 0."""
    key: ResultKey
    """Estimated key."""
    loudness: ResultLoudness
    """Loudness and level."""
    rms: MeanStd
    """Frame RMS (linear, full scale = 1)."""
    zero_crossing_rate: MeanStd
    """Sign changes per sample within each frame."""
    spectral_centroid_hz: MeanStd
    """Spectral centroid over non-silent frames, Hz."""
    spectral_bandwidth_hz: MeanStd
    """Spectral bandwidth over non-silent frames, Hz."""
    spectral_rolloff_hz: MeanStd
    """85 % spectral roll-off over non-silent frames, Hz."""
    spectral_flatness: MeanStd
    """Spectral flatness over non-silent frames, 0..1."""
    spectral_contrast_db: MeanStdVector
    """Spectral contrast in 7 bands, dB."""
    mfcc: MeanStdVector
    """20 mel-frequency cepstral coefficients."""
    chroma: ResultChroma
    """Mean chroma and the tuning it was computed with."""
    onset_rate_per_s: float
    """Detected onsets per second of audio."""
    silence_ratio: float
    """Fraction of frames whose RMS is below -60 dBFS, 0..1."""


@with_config(_SCHEMA)
class ResultFrames(TypedDict):
    """The frame-level series delivered beside the document (`frames.csv`, `frames.npz`)."""

    hop_s: float
    """Seconds between frames; frame `i` is centred at `i * hop_s`."""
    names: list[str]
    """Names of the series (the CSV's columns after `time_s`, the NPZ's arrays)."""
    count: int
    """Frames per series."""


@with_config(_SCHEMA)
class ResultDocument(TypedDict):
    """The result document of one analysed file (docs/result.md)."""

    analyzer_version: str
    """Version of the analysis code; a result with another version is stale."""
    profile: str
    """The profile used: `standard` or `fast`."""
    audio: ResultAudio
    """What was decoded."""
    summary: ResultSummary
    """Whole-file features."""
    frames: ResultFrames
    """Describes the frame-level series delivered beside the document."""
