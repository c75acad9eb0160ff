"""Pictures of a signal: waveform peaks for a browser to draw, a log-mel spectrogram PNG.

Pure like the rest of the package: a signal and plain parameters in, a dict or PNG bytes out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.decode import decode_mono
from analysis.limits import Limits

# Rate the plots are drawn from: the analysis rate, so a plot shows what the features saw.
PLOT_SR = 22050

# Peaks per second of audio: enough to zoom a 3-minute song on a wide screen.
POINTS_PER_SECOND = 100
# Upper bound on peak pairs whatever the duration, so a 4-hour file stays a small JSON.
MAX_POINTS = 20_000

# The spectrogram keeps about this many STFT frames per pixel column: finer is invisible,
# and on long audio it bounds memory (128 mel bands x frames x 4 bytes).
FRAMES_PER_PIXEL = 2


def load_mono(path: str | Path, *, sr: int = PLOT_SR, limits: Limits = Limits()) -> np.ndarray:  # noqa: B008 - frozen
    """Decode a file to a mono float32 signal at ``sr``: ``analysis.decode.decode_mono``,
    so a plot shows the signal the features saw.

    Parameters
    ----------
    path : str or Path
        An audio file on local disk; its decoder is chosen by content.
    sr : int
        Target sample rate.
    limits : Limits
        Bounds checked from the header and while decoding.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]

    Raises
    ------
    InvalidAudio
        A subclass naming the broken rule.
    """
    return decode_mono(path, sr=sr, limits=limits)[0]


def waveform_peaks(
    y: np.ndarray,
    sr: int,
    *,
    points_per_second: float = POINTS_PER_SECOND,
    max_points: int = MAX_POINTS,
    bits: int = 8,
) -> dict[str, Any]:
    """Min/max pairs of a signal in the audiowaveform JSON format (what peaks.js reads).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono signal, full scale = 1.0.
    sr : int
        Sample rate of ``y``.
    points_per_second : float > 0
        Wanted pairs per second of audio.
    max_points : int > 0
        Most pairs returned; long signals get more samples per pair instead.
    bits : {8, 16}
        Resolution of the values: 8 bits scales full scale to -128..127, 16 bits to
        -32768..32767 (audiowaveform's convention: +1.0 clips to the largest value).

    Returns
    -------
    dict
        ``{"version": 2, "channels": 1, "sample_rate": sr, "samples_per_pixel": spp,
        "bits": bits, "length": m, "data": [min_0, max_0, min_1, max_1, ...]}`` with ``m``
        pairs; the last pair covers the remainder of the signal.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    if points_per_second <= 0 or max_points <= 0:
        raise ValueError("points_per_second and max_points must be positive")
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    samples_per_pixel = max(1, round(sr / points_per_second), math.ceil(y.size / max_points))
    length = math.ceil(y.size / samples_per_pixel)
    padded = np.zeros(length * samples_per_pixel, dtype=np.float32)
    padded[: y.size] = y
    # Padding zeros must not widen the last pair: fill them with its last real sample.
    if y.size and padded.size > y.size:
        padded[y.size :] = y[-1]
    pairs = padded.reshape(length, samples_per_pixel)
    scale = float(2 ** (bits - 1))
    lows = np.clip(np.round(pairs.min(axis=1) * scale), -scale, scale - 1)
    highs = np.clip(np.round(pairs.max(axis=1) * scale), -scale, scale - 1)
    data = np.empty(2 * length, dtype=np.int32)
    data[0::2] = lows
    data[1::2] = highs
    return {
        "version": 2,
        "channels": 1,
        "sample_rate": int(sr),
        "samples_per_pixel": int(samples_per_pixel),
        "bits": bits,
        "length": int(length),
        "data": data.tolist(),
    }


def spectrogram_png(
    y: np.ndarray,
    sr: int,
    *,
    beats_s: Sequence[float] = (),
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    width: int = 1200,
    height: int = 400,
    dpi: int = 100,
    top_db: float = 80.0,
) -> bytes:
    """A log-mel spectrogram as a PNG, time (s) across and frequency (Hz) up, beats marked.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono signal.
    sr : int
        Sample rate of ``y``.
    beats_s : sequence of float
        Beat times in seconds, drawn as thin vertical lines.
    n_fft, hop_length, n_mels : int
        STFT and mel parameters; ``hop_length`` grows on long signals so that there are
        about ``FRAMES_PER_PIXEL`` frames per pixel column.
    width, height : int
        Image size in pixels.
    dpi : int
        Dots per inch (sets the text size relative to the image).
    top_db : float
        Dynamic range shown below the loudest cell.

    Returns
    -------
    bytes
        A PNG of exactly ``width`` x ``height`` pixels.
    """
    import librosa
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    y = np.asarray(y, dtype=np.float32).reshape(-1)
    duration_s = y.size / sr
    hop_length = max(hop_length, math.ceil(y.size / (width * FRAMES_PER_PIXEL)))
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    fmax = sr / 2.0
    S = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmax=fmax
    )
    S_db = librosa.power_to_db(S, ref=max(float(S.max()), 1e-10), top_db=top_db)

    # A Figure with its own Agg canvas, never pyplot: pyplot's global figure registry is not
    # thread-safe, and matplotlib.use() would switch the backend of a notebook that imports us.
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.07, 0.14, 0.86, 0.78))
    mel_max = float(librosa.hz_to_mel(fmax))
    # Rows are equally spaced in mel; the axis is drawn in mel units and labelled in Hz.
    image = ax.imshow(
        S_db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, max(duration_s, 1e-3), 0.0, mel_max),
        interpolation="nearest",
    )
    ticks_hz = [f for f in (0, 250, 500, 1000, 2000, 4000, 8000, 16000) if f <= fmax]
    ax.set_yticks([float(librosa.hz_to_mel(f)) for f in ticks_hz])
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda _v, i: f"{ticks_hz[i]:g}" if i < len(ticks_hz) else "")
    )
    beats = [b for b in beats_s if 0.0 <= b <= duration_s]
    if beats:
        ax.vlines(beats, 0.0, mel_max, colors="#7fdbff", linewidths=0.7, alpha=0.7)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Frequency (Hz)")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    colorbar.set_label("dB")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
