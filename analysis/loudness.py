"""Loudness per ITU-R BS.1770-4 / EBU R 128, measured while the file decodes.

The meter sees native-rate, all-channel PCM block by block (the analysis signal is a mono
downmix at 22050 Hz, which would change both the K-weighting and the channel sum), keeps only
one float per 100 ms, and so costs no memory worth mentioning even for hours of audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

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
# Length of a loudness step in seconds: gating blocks and short-term windows are whole steps.
STEP_S = 0.1


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
    """Loudness and level figures of a whole file (all channels, native rate).

    ``steps`` (K-weighted energy of each 100 ms step, float64) and ``step`` (native samples
    per step) are what the figures were gated from, kept so that a part of the file (a
    section) can be measured the same way: ``integrated_loudness(steps[a:b], step)``.
    """

    integrated_lufs: float
    loudness_range_lu: float
    peak_dbfs: float
    clipping_ratio: float
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    step: int = 0


def step_samples(sr: int) -> int:
    """Native samples in one loudness step (``STEP_S`` at ``sr``), as ``LoudnessMeter`` counts."""
    return max(1, round(STEP_S * sr))


@dataclass
class Levels:
    """Running sample peak and clipped-sample count of PCM blocks (all channels).

    Attributes
    ----------
    peak : float
        Largest absolute sample value seen.
    clipped : int
        Samples (times channels) with ``|x| >= CLIP_THRESHOLD``.
    samples : int
        All samples (times channels) seen.
    """

    peak: float = 0.0
    clipped: int = 0
    samples: int = 0

    def add(self, block: np.ndarray) -> None:
        """Count one block of PCM, shape (n, channels), float in [-1, 1]."""
        if block.size == 0:
            return
        absmax = max(float(block.max()), -float(block.min()))
        self.peak = max(self.peak, absmax)
        if absmax >= CLIP_THRESHOLD:
            self.clipped += int(np.count_nonzero(np.abs(block) >= CLIP_THRESHOLD))
        self.samples += block.size


def loudness_from_steps(steps: np.ndarray, *, step: int, levels: Levels) -> Loudness:
    """The ``Loudness`` of a whole signal from its step energies and levels.

    Parameters
    ----------
    steps : np.ndarray [shape=(n_steps,)], float64
        K-weighted energy (summed over channels) of each consecutive step of ``step``
        samples, from the signal's start: ``LoudnessMeter.steps``, or the concatenation of
        the steps of consecutive spans.
    step : int
        Samples per step (``step_samples(sr)``).
    levels : Levels
        Peak and clipping over the same signal.

    Returns
    -------
    Loudness
        Integrated loudness floored at ``LOUDNESS_FLOOR_LUFS``, peak at ``DB_FLOOR``.
    """
    integrated = integrated_loudness(steps, step)
    lra = loudness_range(steps, step)
    peak = 20.0 * np.log10(levels.peak) if levels.peak > 0 else DB_FLOOR
    return Loudness(
        integrated_lufs=float(max(integrated, LOUDNESS_FLOOR_LUFS)),
        loudness_range_lu=float(lra),
        peak_dbfs=float(max(peak, DB_FLOOR)),
        clipping_ratio=float(levels.clipped / levels.samples) if levels.samples else 0.0,
        steps=steps,
        step=step,
    )


class LoudnessMeter:
    """Streaming BS.1770 meter: ``add`` native-rate blocks, then ``result()``.

    All channels weigh 1.0 (BS.1770 gives surround channels 1.41, which needs a layout we do
    not reliably get from every container); stereo and mono are exact.

    Attributes
    ----------
    step : int
        Native samples per loudness step (``step_samples(sr)``).
    levels : Levels
        Peak and clipping of every block added.
    """

    def __init__(self, sr: int, channels: int) -> None:
        self.sr = sr
        self.channels = channels
        self.step = step_samples(sr)
        self.levels = Levels()
        self._sos = k_weighting_sos(sr)
        self._zi = np.zeros((self._sos.shape[0], 2, channels))
        # The step being filled: its energy so far and how many samples it has.
        self._partial = np.zeros(2)
        self._steps: list[float] = []

    @property
    def steps(self) -> np.ndarray:
        """K-weighted energy of each step completed so far, float64 [shape=(n_steps,)]."""
        return np.asarray(self._steps, dtype=np.float64)

    def add(self, block: np.ndarray) -> None:
        """Feed one block of PCM, shape (n, channels), float in [-1, 1]."""
        if block.size == 0:
            return
        self.levels.add(block)
        steps = np.empty(block.shape[0] // self.step + 1)
        done = _k_weighted_steps(block, self._sos, self._zi, self.step, self._partial, steps)
        self._steps.extend(steps[:done].tolist())

    def result(self) -> Loudness:
        """The loudness of everything added so far."""
        return loudness_from_steps(self.steps, step=self.step, levels=self.levels)


def _block_loudness(steps: np.ndarray, step: int, n_steps: int) -> np.ndarray:
    """Loudness of windows of ``n_steps`` steps, hopping by one step."""
    if steps.size < n_steps:
        return np.zeros(0)
    sums = np.convolve(steps, np.ones(n_steps), mode="valid")
    mean_square = sums / (n_steps * step)
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(mean_square)


def integrated_loudness(steps: np.ndarray, step: int) -> float:
    """BS.1770 gated integrated loudness (LUFS) from step energies; ``-inf`` when all is gated.

    Parameters
    ----------
    steps : np.ndarray [shape=(n_steps,)]
        K-weighted energy of each 100 ms step, summed over channels.
    step : int
        Samples per step: 400 ms blocks are four steps, overlapping by three.
    """
    blocks = _block_loudness(steps, step, 4)
    blocks = blocks[blocks > ABSOLUTE_GATE_LUFS]
    if blocks.size == 0:
        return -np.inf
    power = 10.0 ** ((blocks + 0.691) / 10.0)
    relative_gate = -0.691 + 10.0 * np.log10(power.mean()) + RELATIVE_GATE_LU
    gated = power[blocks > relative_gate]
    return float(-0.691 + 10.0 * np.log10(gated.mean()))


def loudness_range(steps: np.ndarray, step: int) -> float:
    """EBU Tech 3342 loudness range (LU) from step energies; 0 when all is gated.

    3 s short-term windows (30 steps), absolute gate, -20 LU relative gate, the spread from
    the 10th to the 95th percentile. Parameters as ``integrated_loudness``.
    """
    short = _block_loudness(steps, step, 30)
    short = short[short > ABSOLUTE_GATE_LUFS]
    if short.size == 0:
        return 0.0
    power = 10.0 ** ((short + 0.691) / 10.0)
    gate = -0.691 + 10.0 * np.log10(power.mean()) + LRA_RELATIVE_GATE_LU
    short = short[short > gate]
    low, high = np.percentile(short, [10, 95])
    return float(high - low)


@numba.njit(cache=True, nogil=True)
def _k_weighted_steps(
    x: np.ndarray,
    sos: np.ndarray,
    zi: np.ndarray,
    step: int,
    partial: np.ndarray,
    out: np.ndarray,
) -> int:
    """K-weight ``x`` (n, channels), sum the filtered energy of all channels per ``step``.

    The float64 arithmetic of ``scipy.signal.sosfilt`` (two biquads, transposed direct form
    II), restructured for speed: a biquad is a chain of dependent multiply-adds, so two
    channels are filtered in the same pass (two independent chains run in the time of one),
    and no filtered copy of the block is written: ~2 ns per sample and channel instead of
    sosfilt's ~4 (measured on 44.1 kHz stereo). ``zi`` (2 sections, 2, channels) and
    ``partial`` (energy and sample count of the unfinished step) carry over between calls;
    the energies of the steps completed go to ``out`` and their count is returned.
    """
    n, channels = x.shape
    k = (sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5],
         sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5])  # fmt: skip
    acc, filled = partial[0], int(partial[1])
    done = 0
    if channels <= 2:
        # Mono and stereo, nearly every file: energies go straight into the steps.
        d = channels - 1
        twin = 1.0 if d else 0.0
        z = _state(zi, 0, d)
        for t in range(n):
            y, u, z = _biquads(np.float64(x[t, 0]), np.float64(x[t, d]), k, z)
            acc += y * y + twin * (u * u)
            filled += 1
            if filled == step:
                out[done] = acc
                done += 1
                acc, filled = 0.0, 0
        _store(zi, 0, d, z)
    else:
        energy = np.zeros(n)
        for c in range(0, channels, 2):
            # An odd last channel is paired with itself; its twin's result is not counted.
            d = min(c + 1, channels - 1)
            twin = 1.0 if d != c else 0.0
            z = _state(zi, c, d)
            for t in range(n):
                y, u, z = _biquads(np.float64(x[t, c]), np.float64(x[t, d]), k, z)
                energy[t] += y * y + twin * (u * u)
            _store(zi, c, d, z)
        for t in range(n):
            acc += energy[t]
            filled += 1
            if filled == step:
                out[done] = acc
                done += 1
                acc, filled = 0.0, 0
    partial[0], partial[1] = acc, filled
    return done


@numba.njit(inline="always")
def _biquads(
    v: float, w: float, k: tuple[float, ...], z: tuple[float, ...]
) -> tuple[float, float, tuple[float, ...]]:
    """One sample of channels ``v`` and ``w`` through both sections; ``z`` is their state."""
    b00, b01, b02, a01, a02, b10, b11, b12, a11, a12 = k
    p00, p01, p10, p11, q00, q01, q10, q11 = z
    y0 = b00 * v + p00
    u0 = b00 * w + q00
    p00 = b01 * v - a01 * y0 + p01
    q00 = b01 * w - a01 * u0 + q01
    p01 = b02 * v - a02 * y0
    q01 = b02 * w - a02 * u0
    y1 = b10 * y0 + p10
    u1 = b10 * u0 + q10
    p10 = b11 * y0 - a11 * y1 + p11
    q10 = b11 * u0 - a11 * u1 + q11
    p11 = b12 * y0 - a12 * y1
    q11 = b12 * u0 - a12 * u1
    return y1, u1, (p00, p01, p10, p11, q00, q01, q10, q11)


@numba.njit(inline="always")
def _state(zi: np.ndarray, c: int, d: int) -> tuple[float, ...]:
    return (zi[0, 0, c], zi[0, 1, c], zi[1, 0, c], zi[1, 1, c],
            zi[0, 0, d], zi[0, 1, d], zi[1, 0, d], zi[1, 1, d])  # fmt: skip


@numba.njit(inline="always")
def _store(zi: np.ndarray, c: int, d: int, z: tuple[float, ...]) -> None:
    # With d == c the twin's state is written last; both copies are the same channel's.
    zi[0, 0, d], zi[0, 1, d], zi[1, 0, d], zi[1, 1, d] = z[4], z[5], z[6], z[7]
    zi[0, 0, c], zi[0, 1, c], zi[1, 0, c], zi[1, 1, c] = z[0], z[1], z[2], z[3]
