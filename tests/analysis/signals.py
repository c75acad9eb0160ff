"""Known-answer signals and hand-made files for the analysis tests."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf


def sine(hz: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, y, sr, subtype=subtype)
    return path


def forged_wav(path: Path, *, sr: int, channels: int, n_frames: int) -> Path:
    """A PCM WAV written byte by byte, so its header can say what no encoder would write."""
    bits = 16
    data = bytes(n_frames * channels * bits // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * channels * 2, channels * 2, bits)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + len(data)) + body + data)
    return path


def understated_adts(path: Path, rng: np.random.Generator, *, seconds: float = 60.0) -> Path:
    """Raw AAC (ADTS) whose estimated duration is far below its real one.

    ADTS has no length field; FFmpeg estimates it from the first frames' bit rate. One second
    of loud noise followed by a minute of digital silence (tiny frames) makes it estimate a
    few seconds for a file that decodes to about 61 s: a header that lies.
    """
    sr = 44100
    y = np.concatenate([rng.uniform(-0.5, 0.5, sr), np.zeros(int(seconds * sr))]).astype(np.float32)
    with av.open(str(path), mode="w", format="adts") as container:
        stream = container.add_stream("aac", rate=sr, layout="mono")
        stream.bit_rate = 256000
        for pts in range(0, len(y), 1024):
            frame = av.AudioFrame.from_ndarray(
                y[np.newaxis, pts : pts + 1024], format="fltp", layout="mono"
            )
            frame.rate = sr
            frame.pts = pts
            frame.time_base = Fraction(1, sr)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink: what a muxer writing to ``pipe:1`` sees."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def piped(
    y: np.ndarray,
    sr: int,
    *,
    format: str,
    codec: str,
    sample_format: str = "fltp",
    container_options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
    bit_rate: int | None = None,
) -> bytes:
    """``y`` [shape=(channels, n)] encoded by FFmpeg (PyAV) into a pipe, as ``ffmpeg ... pipe:1``.

    The muxer cannot seek back, so it never fills in the sizes and counts it would patch in
    a file: FLAC's total_samples stays 0, WAV/RF64 sizes stay 0xFFFFFFFF/0, MP3 gets no Xing
    frame, MP4 must be fragmented.
    """
    layout = {1: "mono", 2: "stereo"}[y.shape[0]]
    sink = _Pipe()
    with av.open(sink, mode="w", format=format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=sr, layout=layout, options=codec_options or {})
        stream.format = sample_format
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        step = stream.codec_context.frame_size or 1024
        for pts in range(0, y.shape[1], step):
            block = y[:, pts : pts + step]
            if sample_format == "s16":
                data = np.round(block * 32767).astype(np.int16).T.reshape(1, -1)
            elif sample_format == "flt":
                data = np.ascontiguousarray(block.T.reshape(1, -1))
            else:
                data = np.ascontiguousarray(block)
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout=layout)
            frame.rate = sr
            frame.pts = pts
            frame.time_base = Fraction(1, sr)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return bytes(sink.data)


def flac_with_total_samples(flac: bytes, total_samples: int) -> bytes:
    """``flac`` with STREAMINFO's 36-bit total sample count rewritten (0 means "unknown").

    STREAMINFO follows "fLaC" and a 4-byte block header; its bytes 10..17 hold sample rate
    (20 bits) | channels-1 (3) | bits-1 (5) | total samples (36).
    """
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0
    start = 8 + 10
    bits = int.from_bytes(flac[start : start + 8], "big")
    bits = (bits & ~((1 << 36) - 1)) | total_samples
    return flac[:start] + bits.to_bytes(8, "big") + flac[start + 8 :]


def streamed_wav(pcm: bytes, *, sr: int, channels: int, riff_size: int, data_size: int) -> bytes:
    """A PCM-16 WAV whose RIFF and data sizes are what a streaming writer left there."""
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * channels * 2, channels * 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
        + pcm
    )


def streamed_rf64(pcm: bytes, *, sr: int, channels: int) -> bytes:
    """A PCM-16 RF64 as written to a pipe: every ds64 size 0, RIFF and data sizes 0xFFFFFFFF.

    EBU Tech 3306: the 32-bit sizes are -1 and the real ones live in ds64, which a writer
    that cannot seek back leaves zeroed.
    """
    ds64 = struct.pack("<QQQI", 0, 0, 0, 0)
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * channels * 2, channels * 2, 16)
    return (
        b"RF64"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEds64"
        + struct.pack("<I", len(ds64))
        + ds64
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
        + pcm
    )
