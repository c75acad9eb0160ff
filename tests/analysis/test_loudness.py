"""BS.1770 loudness against the standard's own reference figures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from analysis.loudness import LoudnessMeter, k_weighting_sos
from tests.analysis.signals import sine


def _measure(y: np.ndarray, sr: int, block: int = 4096):
    meter = LoudnessMeter(sr, y.shape[1])
    for i in range(0, y.shape[0], block):
        meter.add(y[i : i + block])
    return meter.result()


def test_k_weighting_matches_the_published_48k_coefficients():
    sos = k_weighting_sos(48000)
    np.testing.assert_allclose(
        sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0,
                 -1.69065929318241, 0.73248077421585], atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(
        sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-9
    )


@pytest.mark.parametrize("sr", [44100, 48000])
def test_full_scale_997_hz_sine_in_one_channel_reads_minus_3_01_lufs(sr: int):
    # BS.1770-4, 2.1: a 0 dBFS 997 Hz sine in one channel measures -3.01 LKFS.
    left = sine(997.0, 5.0, sr, amplitude=1.0)
    y = np.stack([left, np.zeros_like(left)], axis=1)
    assert _measure(y, sr).integrated_lufs == pytest.approx(-3.01, abs=0.02)


def test_block_size_does_not_change_the_result(rng: np.random.Generator):
    y = (0.1 * rng.standard_normal((3 * 44100, 2))).astype(np.float32)
    a, b = _measure(y, 44100, block=1000), _measure(y, 44100, block=65536)
    assert a == b or a.integrated_lufs == pytest.approx(b.integrated_lufs, abs=1e-9)


def test_relative_gate_ignores_quiet_passages():
    sr = 48000
    loud = sine(997.0, 4.0, sr, amplitude=0.5)
    quiet = sine(997.0, 4.0, sr, amplitude=0.5 * 10 ** (-30 / 20))
    y = np.concatenate([loud, quiet])[:, np.newaxis]
    # The -30 dB half is below the -10 LU relative gate. What passes: 37 all-loud 400 ms
    # blocks and the 3 blocks straddling the step, 3/4, 2/4 and 1/4 loud (their power ~3/4,
    # 2/4, 1/4): a mean power of 38.5/40 of the loud half's.
    expected = -3.01 - 6.02 + 10 * np.log10(38.5 / 40)
    assert _measure(y, sr).integrated_lufs == pytest.approx(expected, abs=0.01)


def test_loudness_range_of_a_20_lu_step():
    sr = 48000
    loud = sine(997.0, 10.0, sr, amplitude=0.5)
    softer = sine(997.0, 10.0, sr, amplitude=0.5 * 10 ** (-10 / 20))
    y = np.concatenate([loud, softer])[:, np.newaxis]
    assert _measure(y, sr).loudness_range_lu == pytest.approx(10.0, abs=0.5)


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_k_weighted_steps_equal_scipy_sosfilt(rng: np.random.Generator, channels: int):
    # The meter's compiled filter against scipy's reference filter, sample for sample.
    sr = 44100
    y = (0.3 * rng.standard_normal((2 * sr + 123, channels))).astype(np.float32)
    meter = LoudnessMeter(sr, channels)
    for i in range(0, y.shape[0], 7001):
        meter.add(y[i : i + 7001])
    filtered = scipy.signal.sosfilt(k_weighting_sos(sr), y.astype(np.float64), axis=0)
    energy = (filtered**2).sum(axis=1)
    step = round(0.1 * sr)
    expected = energy[: energy.size // step * step].reshape(-1, step).sum(axis=1)
    np.testing.assert_allclose(meter.steps, expected, rtol=1e-12)


def test_every_channel_counts_once():
    sr = 48000
    tone = sine(997.0, 5.0, sr, amplitude=1.0)
    y = np.stack([tone, 0.5 * tone, 0.25 * tone], axis=1)
    # Channel powers add: 1 + 1/4 + 1/16 of the one-channel -3.01 LUFS.
    expected = -3.01 + 10 * np.log10(1.3125)
    assert _measure(y, sr).integrated_lufs == pytest.approx(expected, abs=0.02)


def test_levels_count_every_clipped_sample_once_across_blocks():
    # 0.5-amplitude stereo with 7 + 3 samples at or beyond the 0.999 rail and 2 just below it.
    y = sine(440.0, 0.1, 48000)
    y = np.stack([y, y], axis=1).astype(np.float32)
    rails = [(10, 0, 1.0), (127, 0, 1.0), (128, 0, 1.0), (129, 1, 1.0), (2000, 0, 0.999)]
    rails += [(2001, 1, 0.9995), (4000, 0, 1.0), (4001, 1, -1.0), (4002, 0, -0.9995)]
    rails += [(4700, 1, -1.0), (100, 0, 0.9989), (101, 1, -0.9989)]
    for i, c, v in rails:
        y[i, c] = v
    expected_clipped = sum(abs(np.float32(v)) >= 0.999 for _, _, v in rails)
    assert expected_clipped == 10
    meter = LoudnessMeter(48000, 2)
    for i in range(0, y.shape[0], 128):  # a block edge between the samples 127 and 128
        meter.add(y[i : i + 128])
    assert meter.levels.peak == 1.0
    assert meter.levels.clipped == expected_clipped
    assert meter.levels.samples == y.size
    result = meter.result()
    assert result.clipping_ratio == pytest.approx(10 / y.size)
    assert result.peak_dbfs == 0.0
