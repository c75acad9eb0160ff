"""Errors of the analysis package.

Invalid audio is the caller's problem, never worth a retry: every subclass of ``InvalidAudio``
carries a stable ``code`` that the API and the CLI report verbatim.
"""

from __future__ import annotations


class AnalysisError(Exception):
    """Raised when an analysis cannot be produced; base of this module."""


class InvalidAudio(AnalysisError):
    """Raised when the input is not audio we can analyse; base of the user-error codes."""

    code = "invalid_audio"


class UnreadableAudio(InvalidAudio):
    """Raised when neither soundfile nor PyAV can decode the file."""

    code = "unreadable_audio"


class EmptyAudio(InvalidAudio):
    """Raised when the file holds no samples (zero-length audio or an empty file)."""

    code = "empty_audio"


class DurationExceeded(InvalidAudio):
    """Raised when the duration, declared or decoded, is above ``Limits.max_duration_s``."""

    code = "duration_exceeded"


class SampleRateOutOfRange(InvalidAudio):
    """Raised when the sample rate is outside ``Limits.min_sample_rate..max_sample_rate``."""

    code = "sample_rate_out_of_range"


class TooManyChannels(InvalidAudio):
    """Raised when the channel count is above ``Limits.max_channels``."""

    code = "too_many_channels"


class DecodedSizeExceeded(InvalidAudio):
    """Raised when the decoded PCM (float32, native rate) is above ``Limits.max_decoded_bytes``."""

    code = "decoded_size_exceeded"


class UnknownProfile(AnalysisError):
    """Raised when ``profile`` is not one of ``PROFILES``."""
