"""Decoding: every sample format, and every way a file can be bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import Limits, analyze_file
from analysis.decode import decode_mono, open_audio
from analysis.errors import (
    DecodedSizeExceeded,
    DurationExceeded,
    EmptyAudio,
    InvalidAudio,
    SampleRateOutOfRange,
    TooManyChannels,
    UnreadableAudio,
)
from tests.analysis.signals import forged_wav, sine, understated_adts, write

# extension -> (format, codec, native rate) as written by scripts/make_samples.py
FORMATS = {
    "wav": ("wav", "pcm_16", 16000),
    "flac": ("flac", "pcm_16", 22050),
    "ogg": ("ogg", "vorbis", 44100),
    "opus": ("ogg", "opus", 48000),
    "mp3": ("mp3", "mpeg_layer_iii", 44100),
    "m4a": ("mp4", "aac", 44100),
}


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_every_sample_format_decodes_with_its_duration_and_rate(samples_dir: Path, ext: str):
    fmt, codec, sr = FORMATS[ext]
    with open_audio(samples_dir / f"sine440.{ext}", limits=Limits()) as source:
        assert (source.info.format, source.info.codec) == (fmt, codec)
        assert source.info.sample_rate == sr
        assert source.info.channels == 1
        y = np.concatenate(list(source.blocks()))
    assert y.dtype == np.float32 and y.shape[1] == 1
    # Lossy codecs pad or trim a frame; 30 ms covers an AAC/MP3 frame at 44.1 kHz.
    assert y.shape[0] / sr == pytest.approx(5.0, abs=0.03)
    # RMS, not peak: FFmpeg's AAC encoder overshoots at the start of a file.
    assert np.sqrt(np.mean(y**2)) == pytest.approx(0.5 / np.sqrt(2), abs=0.02)


def test_decoder_is_chosen_by_content_not_extension(samples_dir: Path, tmp_path: Path):
    disguised = tmp_path / "really_aac.wav"
    disguised.write_bytes((samples_dir / "sine440.m4a").read_bytes())
    doc = analyze_file(disguised).document
    assert (doc["audio"]["format"], doc["audio"]["codec"]) == ("mp4", "aac")
    assert doc["audio"]["duration_s"] == pytest.approx(5.0, abs=0.03)


def test_stereo_is_downmixed_and_resampled_to_22050(tmp_path: Path):
    left, right = sine(440.0, 2.0, 48000), sine(440.0, 2.0, 48000)
    path = write(tmp_path / "stereo.flac", np.stack([left, -right, left], axis=1), 48000)
    analysis = analyze_file(path)
    assert analysis.document["audio"]["channels"] == 3
    assert analysis.hop_s == pytest.approx(512 / 22050)
    assert analysis.document["audio"]["duration_s"] == pytest.approx(2.0, abs=1e-3)


def test_text_file_renamed_wav_is_unreadable(tmp_path: Path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 100)
    with pytest.raises(UnreadableAudio) as err:
        analyze_file(path)
    assert err.value.code == "unreadable_audio"
    assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "m4a", "ogg"])
def test_file_truncated_inside_its_header_is_unreadable(samples_dir: Path, tmp_path: Path, ext):
    path = tmp_path / f"cut.{ext}"
    path.write_bytes((samples_dir / f"click120_cmajor.{ext}").read_bytes()[:30])
    with pytest.raises(UnreadableAudio):
        analyze_file(path)


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_file_truncated_midway_yields_a_shorter_result_or_invalid_audio(
    samples_dir: Path, tmp_path: Path, ext: str
):
    data = (samples_dir / f"click120_cmajor.{ext}").read_bytes()
    path = tmp_path / f"half.{ext}"
    path.write_bytes(data[: len(data) // 2])
    try:
        doc = analyze_file(path).document
    except InvalidAudio as exc:
        assert exc.code == "unreadable_audio"
    else:
        assert 2.0 < doc["audio"]["duration_s"] < 6.0


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.mp3"
    path.touch()
    with pytest.raises(EmptyAudio) as err:
        analyze_file(path)
    assert err.value.code == "empty_audio"


def test_zero_length_audio(tmp_path: Path):
    with pytest.raises(EmptyAudio):
        analyze_file(forged_wav(tmp_path / "zero.wav", sr=44100, channels=1, n_frames=0))


def test_missing_file_is_unreadable(tmp_path: Path):
    with pytest.raises(UnreadableAudio):
        analyze_file(tmp_path / "nowhere.wav")


def test_too_long_is_refused_from_the_header(samples_dir: Path):
    with pytest.raises(DurationExceeded) as err:
        analyze_file(samples_dir / "sine440.flac", limits=Limits(max_duration_s=3.0))
    assert err.value.code == "duration_exceeded"
    assert str(err.value) == "duration 5.0 s exceeds the limit of 3 s (max_duration_s)"


@pytest.mark.parametrize("sr", [10_000_000, 100])
def test_absurd_sample_rate_from_forged_header(tmp_path: Path, sr: int):
    path = forged_wav(tmp_path / "rate.wav", sr=sr, channels=1, n_frames=1000)
    with pytest.raises(SampleRateOutOfRange) as err:
        analyze_file(path)
    assert err.value.code == "sample_rate_out_of_range"
    assert f"sample rate {sr} Hz" in str(err.value)


@pytest.mark.parametrize("channels", [64, 2000])
def test_absurd_channel_count_from_forged_header(tmp_path: Path, channels: int):
    path = forged_wav(tmp_path / "chans.wav", sr=44100, channels=channels, n_frames=10)
    with pytest.raises(TooManyChannels) as err:
        analyze_file(path)
    assert err.value.code == "too_many_channels"
    assert f"{channels} channels exceeds the limit of 32 (max_channels)" == str(err.value)


def test_decoded_size_limit_from_header(samples_dir: Path):
    with pytest.raises(DecodedSizeExceeded) as err:
        analyze_file(samples_dir / "sine440.wav", limits=Limits(max_decoded_bytes=10_000))
    assert err.value.code == "decoded_size_exceeded"


def test_duration_limit_is_enforced_while_decoding_when_the_header_lies(
    tmp_path: Path, rng: np.random.Generator
):
    path = understated_adts(tmp_path / "lie.aac", rng)
    limits = Limits(max_duration_s=20.0)
    with open_audio(path, limits=limits) as source:
        assert source.info.duration_s is not None and source.info.duration_s < 20.0
    with pytest.raises(DurationExceeded, match="decoded duration passed"):
        analyze_file(path, limits=limits)


def test_decoded_size_limit_is_enforced_while_decoding(tmp_path: Path, rng: np.random.Generator):
    path = understated_adts(tmp_path / "lie.aac", rng)
    limits = Limits(max_decoded_bytes=44100 * 4 * 20)
    with pytest.raises(DecodedSizeExceeded, match="decoded size passed"):
        analyze_file(path, limits=limits)


def test_every_invalid_audio_code_is_distinct():
    classes = [
        InvalidAudio,
        UnreadableAudio,
        EmptyAudio,
        DurationExceeded,
        SampleRateOutOfRange,
        TooManyChannels,
        DecodedSizeExceeded,
    ]
    codes = [c.code for c in classes]
    assert len(set(codes)) == len(codes)
    assert all(issubclass(c, InvalidAudio) for c in classes)


def test_decode_mono_averages_the_channels_and_resamples(tmp_path: Path):
    sr = 44100
    a, b = sine(440.0, 2.0, sr, amplitude=0.6), sine(1000.0, 2.0, sr, amplitude=0.2)
    # Left and right differ: their mean keeps both tones at half their amplitude.
    path = write(tmp_path / "stereo.wav", np.stack([a, b], axis=1), sr, subtype="FLOAT")
    y, info = decode_mono(path, sr=22050)
    assert (info.sample_rate, info.channels) == (sr, 2)
    assert y.dtype == np.float32 and y.shape == (2 * 22050,)
    expected = (
        sine(440.0, 2.0, 22050, amplitude=0.6) + sine(1000.0, 2.0, 22050, amplitude=0.2)
    ) / 2
    # Away from the edges, where the resampler's filter has no signal on one side.
    np.testing.assert_allclose(y[500:-500], expected[500:-500], atol=2e-3)


def test_decode_mono_at_the_native_rate_is_the_samples_themselves(tmp_path: Path):
    y0 = sine(440.0, 1.0, 22050)
    path = write(tmp_path / "mono.wav", y0, 22050, subtype="FLOAT")
    y, _ = decode_mono(path, sr=22050)
    np.testing.assert_array_equal(y, y0)


def test_decode_mono_checks_the_limits(samples_dir: Path):
    with pytest.raises(DurationExceeded):
        decode_mono(samples_dir / "sine440.flac", sr=22050, limits=Limits(max_duration_s=1.0))
