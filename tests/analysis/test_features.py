"""The chunked STFT pass gives librosa's numbers, whatever the chunk size."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from analysis.features import FeatureExtractor, spectral_features
from analysis.tonal import estimate_tuning


@pytest.fixture
def noisy_chord(rng: np.random.Generator) -> np.ndarray:
    sr = 22050
    t = np.arange(4 * sr) / sr
    y = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 4
    y = y + 0.05 * rng.standard_normal(t.size)
    y[sr : sr + 200] += 0.9  # an onset
    return y.astype(np.float32)


def test_chunking_does_not_change_any_series(noisy_chord: np.ndarray):
    whole = spectral_features(noisy_chord, 22050, chunk_frames=100_000)
    chunked = spectral_features(noisy_chord, 22050, chunk_frames=7)
    for name, series in whole.series.items():
        np.testing.assert_allclose(chunked.series[name], series, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(chunked.mfcc.mean(), whole.mfcc.mean(), rtol=1e-5)
    np.testing.assert_allclose(chunked.chroma.mean(), whole.chroma.mean(), rtol=1e-5)


def test_series_match_librosa_on_the_whole_signal(noisy_chord: np.ndarray):
    sr = 22050
    features = spectral_features(noisy_chord, sr, chunk_frames=50)
    centroid = librosa.feature.spectral_centroid(y=noisy_chord, sr=sr)[0]
    rolloff = librosa.feature.spectral_rolloff(y=noisy_chord, sr=sr)[0]
    bandwidth = librosa.feature.spectral_bandwidth(y=noisy_chord, sr=sr)[0]
    flatness = librosa.feature.spectral_flatness(y=noisy_chord)[0]
    rms = librosa.feature.rms(y=noisy_chord)[0]
    zcr = librosa.feature.zero_crossing_rate(noisy_chord)[0]
    np.testing.assert_allclose(features.series["spectral_centroid_hz"], centroid, rtol=1e-3)
    np.testing.assert_allclose(features.series["spectral_rolloff_hz"], rolloff, rtol=1e-3)
    np.testing.assert_allclose(features.series["spectral_bandwidth_hz"], bandwidth, rtol=1e-3)
    np.testing.assert_allclose(features.series["spectral_flatness"], flatness, rtol=1e-3)
    np.testing.assert_allclose(features.series["rms"], rms, rtol=1e-3, atol=1e-6)
    # librosa pads the ends by repeating the edge sample for ZCR only (zeros elsewhere), so
    # the two frames at each end differ by design.
    np.testing.assert_allclose(features.series["zero_crossing_rate"][2:-2], zcr[2:-2], atol=1e-6)
    onset = librosa.onset.onset_strength(y=noisy_chord, sr=sr)
    # Same peak frame as librosa's envelope (ours floors log-mel absolutely, not per file).
    assert np.argmax(features.series["onset_strength"]) == np.argmax(onset)


def test_pushing_in_uneven_pieces_gives_the_same_features(
    noisy_chord: np.ndarray, rng: np.random.Generator
):
    whole = spectral_features(noisy_chord, 22050, chunk_frames=100_000)
    extractor = FeatureExtractor(22050, chunk_frames=5)
    cuts = np.sort(rng.integers(0, noisy_chord.size, 40))
    for piece in np.split(noisy_chord, cuts):
        extractor.push(piece)
    streamed = extractor.finish()
    assert extractor.n_samples == noisy_chord.size
    for name, series in whole.series.items():
        np.testing.assert_allclose(streamed.series[name], series, rtol=1e-4, atol=1e-5)
    assert streamed.mfcc.count == whole.mfcc.count == series.size
    np.testing.assert_allclose(streamed.mfcc.mean(), whole.mfcc.mean(), rtol=1e-5)
    np.testing.assert_allclose(streamed.contrast.mean(), whole.contrast.mean(), rtol=1e-5)
    np.testing.assert_allclose(streamed.chroma.mean(), whole.chroma.mean(), rtol=1e-5)


@pytest.mark.parametrize("semitones", [0.0, -0.2, 0.31])
def test_tuning_estimate_is_librosas(rng: np.random.Generator, semitones: float):
    sr = 22050
    t = np.arange(3 * sr) / sr
    # A C-major triad tuned `semitones` away from A440, over a little noise.
    hz = 440.0 * 2 ** ((np.array([-9, -5, -2]) + semitones) / 12)
    y = np.sin(2 * np.pi * np.outer(t, hz)).sum(axis=1) / 4 + 0.01 * rng.standard_normal(t.size)
    S = np.abs(librosa.stft(y.astype(np.float32)))
    ours = estimate_tuning(S, sr, 2048)
    assert ours == float(librosa.estimate_tuning(S=S, sr=sr, n_fft=2048))
    # librosa's estimate itself is this close at n_fft 2048 (bins ~11 Hz apart).
    assert ours == pytest.approx(semitones, abs=0.05)


def test_per_frame_matrices_are_librosas_chroma_and_mfcc(noisy_chord: np.ndarray):
    sr = 22050
    features = spectral_features(noisy_chord, sr, chunk_frames=37)
    n = features.series["rms"].size
    assert features.matrices["chroma"].shape == (12, n)
    assert features.matrices["mfcc"].shape == (20, n)
    # librosa's own chroma with the same tuning, frame by frame.
    chroma = librosa.feature.chroma_stft(y=noisy_chord, sr=sr, tuning=features.tuning)
    np.testing.assert_allclose(features.matrices["chroma"], chroma, atol=2e-3)
    # The moments the document reports are the matrices' statistics.
    np.testing.assert_allclose(features.matrices["mfcc"].mean(axis=1), features.mfcc.mean(), 1e-4)
    # C, E and G are the chord's pitch classes: the strongest rows of the chroma.
    assert set(np.argsort(features.matrices["chroma"].mean(axis=1))[-3:]) == {0, 4, 7}


def test_extractors_fed_in_turn_give_what_each_gives_alone(
    noisy_chord: np.ndarray, rng: np.random.Generator
):
    # They share one thread's FFT buffers (features._scratch).
    other = (0.3 * rng.standard_normal(noisy_chord.size)).astype(np.float32)
    alone = [spectral_features(y, 22050, chunk_frames=40) for y in (noisy_chord, other)]
    extractors = [FeatureExtractor(22050, chunk_frames=40) for _ in range(2)]
    for piece in range(0, noisy_chord.size, 5000):
        for extractor, y in zip(extractors, (noisy_chord, other), strict=True):
            extractor.push(y[piece : piece + 5000])
    for extractor, expected, y in zip(extractors, alone, (noisy_chord, other), strict=True):
        together = extractor.finish()
        for name, series in expected.series.items():
            np.testing.assert_array_equal(together.series[name], series)
        # And each is its own signal's, by librosa's computation.
        centroid = librosa.feature.spectral_centroid(y=y, sr=22050)[0]
        np.testing.assert_allclose(together.series["spectral_centroid_hz"], centroid, rtol=1e-3)
