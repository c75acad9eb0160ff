"""Input limits: what a file may declare and decode to before we refuse it."""

from __future__ import annotations

from dataclasses import dataclass

# 4 h of stereo 48 kHz float32 is 5.5 GB: the default keeps that legal while refusing a
# decompression bomb (32 channels at 384 kHz for the same 4 h would be 177 GB).
DEFAULT_MAX_DECODED_BYTES = 8 * 1024**3


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds checked against the header first, then again while decoding.

    Parameters
    ----------
    max_duration_s : float
        Longest accepted duration in seconds.
    max_sample_rate : int
        Highest accepted native sample rate in Hz.
    max_channels : int
        Most accepted channels.
    max_decoded_bytes : int
        Most bytes the decoded signal may occupy as float32 at the native rate and channel
        count (``frames * channels * 4``).
    min_sample_rate : int
        Lowest accepted native sample rate in Hz.
    """

    max_duration_s: float = 14400.0
    max_sample_rate: int = 384000
    max_channels: int = 32
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    min_sample_rate: int = 1000
