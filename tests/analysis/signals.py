"""Known-answer signals and hand-made files for the analysis tests."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

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
