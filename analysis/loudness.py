"""Loudness per ITU-R BS.1770-4 / EBU R 128, measured while the file decodes.

The meter sees native-rate, all-channel PCM block by block (the analysis signal is a mono
downmix at 22050 Hz, which would change both the K-weighting and the channel sum), keeps only
one float per 100 ms, and so costs no memory worth mentioning even for hours of audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal

# The two K-weighting stages (BS.1770 annex 1) as libebur128 parameterises them, so that the
# bilinear transform gives the published taps at 48 kHz and the same curve at any other rate.
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_FC = 1681.974450955533
_HIGHPASS_Q = 0.5003270373253953
_HIGHPASS_FC = 38.13547087613982

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LRA_RELATIVE_GATE_LU = -20.0
# A signal that never passes the absolute gate reports the gate itself: JSON has no -inf.
LOUDNESS_FLOOR_LUFS = ABSOLUTE_GATE_LUFS
DB_FLOOR = -120.0
# |x| at or above this counts as clipped: full scale of 16-bit PCM reads back as 32767/32768,
# and lossy codecs ring just below the rail.
CLIP_THRESHOLD = 0.999


def k_weighting_sos(sr: float) -> np.ndarray:
    """Second-order sections of the K-weighting filter at sample rate ``sr``.

    Returns
    -------
    sos : np.ndarray [shape=(2, 6)]
    """
    k = np.tan(np.pi * _SHELF_FC / sr)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf = [
        (vh + vb * k / _SHELF_Q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / _SHELF_Q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / _SHELF_Q + k * k) / a0,
    ]
    k = np.tan(np.pi * _HIGHPASS_FC / sr)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _HIGHPASS_Q + k * k) / a0]
    sos = np.array([shelf, highpass])
    return sos


@dataclass(frozen=True)
class Loudness:
    """Loudness and level figures of a whole file (all channels, native rate)."""

    integrated_lufs: float
    loudness_range_lu: float
    peak_dbfs: float
    clipping_ratio: float


class LoudnessMeter:
    """Streaming BS.1770 meter: ``add`` native-rate blocks, then ``result()``.

    All channels weigh 1.0 (BS.1770 gives surround channels 1.41, which needs a layout we do
    not reliably get from every container); stereo and mono are exact.
    """

    def __init__(self, sr: int, channels: int) -> None:
        self.sr = sr
        self.channels = channels
        self._sos = k_weighting_sos(sr)
        self._zi = np.zeros((self._sos.shape[0], 2, channels))
        self._step = max(1, round(0.1 * sr))
        self._carry = np.zeros(0)
        self._steps: list[float] = []
        self._peak = 0.0
        self._clipped = 0
        self._samples = 0

    def add(self, block: np.ndarray) -> None:
        """Feed one block of PCM, shape (n, channels), float in [-1, 1]."""
        if block.size == 0:
            return
        absmax = max(float(block.max()), -float(block.min()))
        self._peak = max(self._peak, absmax)
        if absmax >= CLIP_THRESHOLD:
            self._clipped += int(np.count_nonzero(np.abs(block) >= CLIP_THRESHOLD))
        self._samples += block.size
        filtered, self._zi = scipy.signal.sosfilt(self._sos, block, axis=0, zi=self._zi)
        energy = np.einsum("ij,ij->i", filtered, filtered)
        if self._carry.size:
            energy = np.concatenate([self._carry, energy])
        whole = energy.size // self._step * self._step
        if whole:
            self._steps.extend(energy[:whole].reshape(-1, self._step).sum(axis=1).tolist())
        self._carry = energy[whole:]

    def result(self) -> Loudness:
        steps = np.asarray(self._steps)
        integrated = _integrated(steps, self._step)
        lra = _loudness_range(steps, self._step)
        peak = 20.0 * np.log10(self._peak) if self._peak > 0 else DB_FLOOR
        return Loudness(
            integrated_lufs=float(max(integrated, LOUDNESS_FLOOR_LUFS)),
            loudness_range_lu=float(lra),
            peak_dbfs=float(max(peak, DB_FLOOR)),
            clipping_ratio=float(self._clipped / self._samples) if self._samples else 0.0,
        )


def _block_loudness(steps: np.ndarray, step: int, n_steps: int) -> np.ndarray:
    """Loudness of windows of ``n_steps`` 100 ms steps, hopping by one step."""
    if steps.size < n_steps:
        return np.zeros(0)
    sums = np.convolve(steps, np.ones(n_steps), mode="valid")
    mean_square = sums / (n_steps * step)
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(mean_square)


def _integrated(steps: np.ndarray, step: int) -> float:
    blocks = _block_loudness(steps, step, 4)
    blocks = blocks[blocks > ABSOLUTE_GATE_LUFS]
    if blocks.size == 0:
        return -np.inf
    power = 10.0 ** ((blocks + 0.691) / 10.0)
    relative_gate = -0.691 + 10.0 * np.log10(power.mean()) + RELATIVE_GATE_LU
    gated = power[blocks > relative_gate]
    return float(-0.691 + 10.0 * np.log10(gated.mean()))


def _loudness_range(steps: np.ndarray, step: int) -> float:
    # EBU Tech 3342: 3 s short-term windows, absolute gate, -20 LU relative gate, 10th..95th %.
    short = _block_loudness(steps, step, 30)
    short = short[short > ABSOLUTE_GATE_LUFS]
    if short.size == 0:
        return 0.0
    power = 10.0 ** ((short + 0.691) / 10.0)
    gate = -0.691 + 10.0 * np.log10(power.mean()) + LRA_RELATIVE_GATE_LU
    short = short[short > gate]
    low, high = np.percentile(short, [10, 95])
    return float(high - low)
