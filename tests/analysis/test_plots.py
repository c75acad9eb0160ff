"""Plots: known answers for the waveform peaks, a PNG that decodes at the asked size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.errors import InvalidAudio
from analysis.plots import load_mono, spectrogram_png, waveform_peaks

SR = 22050


def sine(freq: float = 440.0, seconds: float = 2.0, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_peaks_of_a_full_scale_sine_are_plus_minus_full_scale() -> None:
    peaks = waveform_peaks(sine(), SR, points_per_second=100)
    assert peaks["version"] == 2
    assert peaks["channels"] == 1
    assert peaks["sample_rate"] == SR
    assert peaks["bits"] == 8
    assert peaks["samples_per_pixel"] == 220  # round(22050 / 100)
    assert peaks["length"] == 201  # ceil(44100 / 220)
    data = peaks["data"]
    assert isinstance(data, list)
    assert len(data) == 2 * 201
    # Every 10 ms window holds several full periods of 440 Hz: min -1.0, max +1.0.
    assert set(data[0:-2:2]) == {-128}
    assert set(data[1:-2:2]) == {127}


def test_peaks_scale_with_amplitude_and_bits() -> None:
    peaks = waveform_peaks(sine(amplitude=0.5), SR, bits=16)
    data = np.array(peaks["data"])
    assert data[0::2].min() == pytest.approx(-16384, abs=2)
    assert data[1::2].max() == pytest.approx(16384, abs=2)


def test_peaks_of_silence_are_zero() -> None:
    peaks = waveform_peaks(np.zeros(SR, np.float32), SR)
    assert set(peaks["data"]) == {0}


def test_peaks_follow_the_signal_in_time() -> None:
    # Loud first half, silent second half: the pairs say so, pair by pair.
    y = np.concatenate([sine(seconds=1.0), np.zeros(SR, np.float32)])
    data = np.array(waveform_peaks(y, SR, points_per_second=10)["data"])
    highs = data[1::2]
    assert (highs[:10] == 127).all()
    assert (highs[10:] == 0).all()


def test_long_signals_are_capped_at_max_points() -> None:
    peaks = waveform_peaks(np.zeros(SR * 60, np.float32), SR, max_points=500)
    assert peaks["length"] <= 500
    assert peaks["samples_per_pixel"] * peaks["length"] >= SR * 60


def test_peaks_refuse_other_bit_depths() -> None:
    with pytest.raises(ValueError, match="bits"):
        waveform_peaks(sine(), SR, bits=12)


def test_spectrogram_png_decodes_at_the_asked_size() -> None:
    png = spectrogram_png(sine(), SR, beats_s=[0.5, 1.0, 1.5], width=800, height=300)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.size == (800, 300)


def test_spectrogram_shows_the_tone_where_it_is() -> None:
    # Two halves, 440 Hz then 4 kHz: the picture differs between the halves, so the data
    # (not a blank axes frame) reached the image.
    y = np.concatenate([sine(440.0, 1.0), sine(4000.0, 1.0)])
    image = np.asarray(Image.open(io.BytesIO(spectrogram_png(y, SR))).convert("L"), float)
    # Plot area of the default layout: columns 15..80 % across, rows 15..85 % down.
    h, w = image.shape
    area = image[int(0.15 * h) : int(0.85 * h), int(0.1 * w) : int(0.85 * w)]
    left, right = area[:, : area.shape[1] // 3], area[:, -area.shape[1] // 3 :]
    assert np.abs(left.mean(axis=1) - right.mean(axis=1)).max() > 40


def test_spectrogram_of_a_very_short_signal_still_renders() -> None:
    png = spectrogram_png(sine(seconds=0.01), SR)
    assert Image.open(io.BytesIO(png)).size == (1200, 400)


def test_load_mono_resamples_to_the_plot_rate(samples_dir: Path) -> None:
    # sine440.wav: 5 s of a half-scale sine stored at 16 kHz.
    y = load_mono(samples_dir / "sine440.wav", sr=SR)
    assert y.dtype == np.float32
    assert y.ndim == 1
    assert y.size == pytest.approx(5 * SR, abs=SR // 100)
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.03)


def test_load_mono_refuses_what_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all")
    with pytest.raises(InvalidAudio):
        load_mono(path)
