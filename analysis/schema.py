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
    """Probability, 0..1, that `bpm` is the beat and not another metrical level (half,
    double, third, ...); 0.0 when there is no pulse."""
    candidates: list[ResultTempoCandidate]
    """Up to 3 metrical levels, most likely first (the first is `bpm`); the half and the
    double of `bpm` whenever they have periodicity evidence. Empty when there is no pulse."""


@with_config(_SCHEMA)
class ResultTempoCandidate(TypedDict):
    """A tempo the beat may be at."""

    bpm: float
    """Beats per minute."""
    weight: float
    """The model's probability, 0..1, that this is the beat."""


@with_config(_SCHEMA)
class ResultKey(TypedDict):
    """Estimated key."""

    tonic: str
    """One of C C# D D# E F F# G G# A A# B (sharps only)."""
    mode: str
    """`major` or `minor`."""
    confidence: float
    """Calibrated 0..1 from the best key's fit and its lead over the second; 0 for silence."""
    candidates: list[ResultKeyCandidate]
    """The best 3 keys, best first; the first is `tonic`/`mode`. Empty for silence."""
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
class ResultScores(TypedDict):
    """Perceptual scores 0..1 by signal processing; null where the method has no evidence."""

    energy: float | None
    """Intensity: loudness, spectral flux and brightness; null only with under 1 s of sound."""
    danceability: float | None
    """Beat strength near dance tempi and envelope regularity (DFA); null under ~1.3 s."""
    valence: float | None
    """Major-versus-minor, tempo and brightness heuristic; null without tonal evidence."""
    acousticness: float | None
    """Crest (peak-to-loudness), loudness range and dark spectrum, less for clipping."""
    instrumentalness: float | None
    """1 - speechiness when speech is found; null otherwise (no sung-voice detector)."""
    speechiness: float | None
    """Voice-like articulation (MFCC change) without held pitch classes (chroma)."""
    liveness: float | None
    """Sustained audience-like noise (applause, crowd): 10 s or more reads 1.0."""


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
    scores: ResultScores
    """Perceptual scores 0..1 (energy, danceability, ...); null where there is no evidence."""
    meter: ResultMeter
    """Beats per bar and its confidence."""
    downbeats_s: list[float]
    """Times of the first beat of each bar, seconds (each one also in `beats_s`)."""
    beat_positions: list[int]
    """Position in its bar (1 = downbeat) of each beat of `beats_s`."""
    tatums_s: list[float]
    """The grid below the beat (each beat divided into 1-4 equal parts), seconds."""
    sections: list[ResultSection]
    """Contiguous sections covering the file."""
    fade: ResultFade
    """Where a fade-in ends and a fade-out starts."""


@with_config(_SCHEMA)
class ResultMeter(TypedDict):
    """Beats per bar, from the accents and harmonic changes of the beats."""

    beats_per_bar: int
    """2..7; 0 when there are no beats."""
    confidence: float
    """Share of bars whose most accented beat is the downbeat, 0 at chance, 0..1."""


@with_config(_SCHEMA)
class ResultSectionKey(TypedDict):
    """The key of one section."""

    tonic: str
    """One of C C# D D# E F F# G G# A A# B (sharps only)."""
    mode: str
    """`major` or `minor`."""
    confidence: float
    """Correlation with the winning key profile, 0..1."""


@with_config(_SCHEMA)
class ResultSection(TypedDict):
    """A section: a stretch of the piece that stays alike (intro, verse, chorus, ...)."""

    start_s: float
    """Start, seconds; the first section starts at 0."""
    end_s: float
    """End, seconds: the next section's start; the last one ends with the file."""
    label: str
    """`A`, `B`, ...: sections that sound alike share a label."""
    confidence: float
    """How clear the change at the start is, 0..1 (1 for the first section)."""
    loudness_lufs: float
    """Gated integrated loudness (BS.1770) of the section, LUFS; floor -70.0."""
    tempo_bpm: float
    """Tempo of the section's onsets, BPM; 0.0 when it has no pulse."""
    key: ResultSectionKey
    """Key of the section's chroma."""


@with_config(_SCHEMA)
class ResultFade(TypedDict):
    """Where the sound fades in and out."""

    end_of_fade_in_s: float
    """End of the fade-in; where the sound starts when it starts abruptly (0.0 usually)."""
    start_of_fade_out_s: float
    """Start of the fade-out; where the sound ends when it stops abruptly (the duration)."""


@with_config(_SCHEMA)
class Segment(TypedDict):
    """A short acoustically uniform unit from an onset on (`segments.json`, not the document)."""

    start_s: float
    """Start, seconds."""
    duration_s: float
    """Length, seconds; the next segment starts at `start_s + duration_s`."""
    confidence: float
    """Strength of the onset that starts it, relative to the file's strong onsets, 0..1."""
    loudness_start_db: float
    """Frame RMS level at the start, dB re full scale; floor -120."""
    loudness_max_db: float
    """Highest frame RMS level within the segment, dB re full scale."""
    loudness_max_time_s: float
    """Seconds from the start to the highest level."""
    loudness_end_db: float
    """Level where the segment ends (the next one's `loudness_start_db`), dB."""
    pitches: list[float]
    """12 values, C first: mean chroma over the segment, the strongest pitch class 1.0."""
    timbre: list[float]
    """12 values: mean MFCC 0..11 over the segment (level, slope, spectral envelope)."""


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
