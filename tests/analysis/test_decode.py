"""Decoding: every sample format, and every way a file can be bad."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

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
from tests.analysis.signals import (
    flac_with_total_samples,
    forged_wav,
    piped,
    sine,
    streamed_rf64,
    streamed_wav,
    understated_adts,
    write,
)

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


def test_duration_limit_is_enforced_while_decoding_when_the_estimate_is_low(
    tmp_path: Path, rng: np.random.Generator
):
    path = understated_adts(tmp_path / "lie.aac", rng)
    limits = Limits(max_duration_s=20.0)
    # FFmpeg's own estimate is far below the limit; ADTS has no length field, so the
    # decoder does not take that estimate for a length, and counts instead.
    with av.open(str(path)) as container:
        assert container.duration is not None and container.duration / av.time_base < 20.0
    with open_audio(path, limits=limits) as source:
        assert source.info.frames is None
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


# -- streamed files: a header written before the length was known -----------------------------
# A writer that cannot seek back (ffmpeg ... pipe:1, recorders, live encoders) leaves its
# length fields at "unknown": decoded and counted, never read as a length.

SR = 44100
TONE = sine(440.0, 3.0, SR)  # 132300 samples, the known answer
PCM = np.round(TONE * 32767).astype("<i2").tobytes()


def _sf_flac(y: np.ndarray, sr: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


STREAMED_LOSSLESS = {
    "flac-pipe": lambda: piped(TONE[None], SR, format="flac", codec="flac", sample_format="s16"),
    "flac-total-samples-0": lambda: flac_with_total_samples(_sf_flac(TONE, SR), 0),
    "wav-pipe": lambda: piped(TONE[None], SR, format="wav", codec="pcm_s16le", sample_format="s16"),
    "wav-sizes-ffffffff": lambda: streamed_wav(
        PCM, sr=SR, channels=1, riff_size=0xFFFFFFFF, data_size=0xFFFFFFFF
    ),
    "wav-sizes-0": lambda: streamed_wav(PCM, sr=SR, channels=1, riff_size=0, data_size=0),
    "wav-data-size-0": lambda: streamed_wav(
        PCM, sr=SR, channels=1, riff_size=0xFFFFFFFF, data_size=0
    ),
    "rf64-pipe": lambda: piped(
        TONE[None],
        SR,
        format="wav",
        codec="pcm_s16le",
        sample_format="s16",
        container_options={"rf64": "always"},
    ),
    "rf64-ds64-0": lambda: streamed_rf64(PCM, sr=SR, channels=1),
}


@pytest.mark.parametrize("form", sorted(STREAMED_LOSSLESS))
def test_streamed_lossless_file_decodes_every_sample(tmp_path: Path, form: str):
    path = tmp_path / "streamed.bin"
    path.write_bytes(STREAMED_LOSSLESS[form]())
    with open_audio(path, limits=Limits()) as source:
        # Unknown, or the true length the file implies: never a made-up one.
        assert source.info.frames in (None, TONE.size)
        assert (source.info.sample_rate, source.info.channels) == (SR, 1)
        y = np.concatenate(list(source.blocks()))
    assert y.shape == (TONE.size, 1)
    np.testing.assert_allclose(y[:, 0], TONE, atol=1.0 / 32767)
    assert analyze_file(path).document["audio"]["duration_s"] == pytest.approx(3.0, abs=1e-6)


def test_streamed_wav_keeps_the_wav_decoder_and_seeks(tmp_path: Path):
    # RF64 with zeroed ds64 is read by libsndfile through the size the file implies, so it
    # reports as the WAV family does and a chunk can start on any sample.
    path = tmp_path / "streamed.rf64"
    path.write_bytes(streamed_rf64(PCM, sr=SR, channels=1))
    with open_audio(path, limits=Limits()) as source:
        assert (source.info.format, source.info.codec) == ("rf64", "pcm_16")
        y = np.concatenate(list(source.blocks(start=SR)))
    np.testing.assert_allclose(y[:, 0], TONE[SR:], atol=1.0 / 32767)
    assert path.read_bytes()[:4] == b"RF64" and path.read_bytes()[20:48] == bytes(28)


STREAMED_LOSSY = {
    "mp3-pipe": lambda: piped(TONE[None], SR, format="mp3", codec="libmp3lame"),
    "mp3-raw-no-id3": lambda: piped(
        TONE[None], SR, format="mp3", codec="libmp3lame", container_options={"id3v2_version": "0"}
    ),
    "adts": lambda: piped(TONE[None], SR, format="adts", codec="aac"),
    "fragmented-mp4": lambda: piped(
        TONE[None],
        SR,
        format="mp4",
        codec="aac",
        container_options={"movflags": "frag_keyframe+empty_moov"},
    ),
    "ogg-opus": lambda: piped(
        sine(440.0, 3.0, 48000)[None], 48000, format="ogg", codec="libopus", sample_format="flt"
    ),
    "ogg-vorbis": lambda: piped(
        np.stack([TONE, TONE]),
        SR,
        format="ogg",
        codec="vorbis",
        codec_options={"strict": "experimental"},
    ),
}


@pytest.mark.parametrize("form", sorted(STREAMED_LOSSY))
def test_streamed_lossy_file_decodes_to_its_tone_and_length(tmp_path: Path, form: str):
    path = tmp_path / "streamed.bin"
    path.write_bytes(STREAMED_LOSSY[form]())
    with open_audio(path, limits=Limits()) as source:
        sr = source.info.sample_rate
        y = np.concatenate(list(source.blocks())).mean(axis=1)
    # Encoder priming and the last frame's padding: within one 1152-sample MP3 frame.
    assert y.size / sr == pytest.approx(3.0, abs=0.05)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.fft.rfftfreq(y.size, 1 / sr)[np.argmax(spectrum)] == pytest.approx(440.0, abs=1.0)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(0.5 / np.sqrt(2), abs=0.02)


def _quiet_then_loud(rng: np.random.Generator) -> np.ndarray:
    # 2 s of silence, then 10 s of noise: a bit-rate estimate taken at the start is far low.
    y = np.concatenate([np.zeros(2 * SR), rng.uniform(-0.5, 0.5, 10 * SR)])
    return y.astype(np.float32)[None]


def test_vbr_mp3_without_xing_is_not_refused_on_its_estimated_length(
    tmp_path: Path, rng: np.random.Generator
):
    path = tmp_path / "vbr.mp3"
    path.write_bytes(
        piped(
            _quiet_then_loud(rng),
            SR,
            format="mp3",
            codec="libmp3lame",
            codec_options={"abr": "1"},
            bit_rate=192000,
        )
    )
    # libsndfile's own figure, from the file size over the first frame's bit rate.
    assert sf.info(str(path)).frames / SR > 30.0
    limits = Limits(max_duration_s=30.0)
    with open_audio(path, limits=limits) as source:
        assert source.info.frames is None
    doc = analyze_file(path, limits=limits).document
    assert doc["audio"]["duration_s"] == pytest.approx(12.0, abs=0.05)


def test_adts_is_not_refused_on_its_estimated_length(tmp_path: Path, rng: np.random.Generator):
    path = tmp_path / "quiet.aac"
    path.write_bytes(piped(_quiet_then_loud(rng), SR, format="adts", codec="aac", bit_rate=256000))
    with av.open(str(path)) as container:
        assert container.duration is not None and container.duration / av.time_base > 30.0
    doc = analyze_file(path, limits=Limits(max_duration_s=30.0)).document
    assert doc["audio"]["duration_s"] == pytest.approx(12.0, abs=0.05)


@pytest.mark.parametrize("id3_bytes", [0, 300_000], ids=["bare", "id3-cover-art"])
def test_mp3_with_a_xing_frame_count_keeps_its_declared_length(
    samples_dir: Path, tmp_path: Path, id3_bytes: int
):
    # Long MP3s are split into chunks by their declared length; a Xing/Info frame count is one.
    data = (samples_dir / "sine440.mp3").read_bytes()
    assert b"Info" in data[:4096] or b"Xing" in data[:4096]
    if id3_bytes:
        # An ID3v2.4 tag holding one big frame; v2.4 sizes are "syncsafe", 7 bits a byte.
        def syncsafe(n: int) -> bytes:
            return bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))

        frame = b"PRIV" + syncsafe(id3_bytes) + b"\0\0" + b"\x01" * id3_bytes
        data = b"ID3\x04\x00\x00" + syncsafe(len(frame)) + frame + data
    path = tmp_path / "xing.mp3"
    path.write_bytes(data)
    with open_audio(path, limits=Limits()) as source:
        assert source.info.frames is not None
        assert source.info.frames / source.info.sample_rate == pytest.approx(5.0, abs=0.03)


@pytest.mark.parametrize("form", ["flac-pipe", "flac-total-samples-0", "wav-data-size-0"])
def test_unknown_length_is_held_to_the_duration_limit_while_decoding(tmp_path: Path, form: str):
    path = tmp_path / "streamed.bin"
    path.write_bytes(STREAMED_LOSSLESS[form]())
    # 3 s against a 1 s limit (plus the 1 s slack for a rounded-up last packet).
    with pytest.raises(DurationExceeded) as err:
        analyze_file(path, limits=Limits(max_duration_s=1.0))
    assert err.value.code == "duration_exceeded"
    assert "over the limit of 1 s" in str(err.value) or "exceeds the limit of 1 s" in str(err.value)


def test_unknown_length_is_held_to_the_decoded_size_limit_while_decoding(tmp_path: Path):
    path = tmp_path / "streamed.flac"
    path.write_bytes(STREAMED_LOSSLESS["flac-pipe"]())
    limits = Limits(max_decoded_bytes=SR * 4)  # 1 s of mono float32
    with open_audio(path, limits=limits) as source:
        assert source.info.frames is None
    with pytest.raises(DecodedSizeExceeded, match="decoded size passed") as err:
        analyze_file(path, limits=limits)
    assert err.value.code == "decoded_size_exceeded"


def test_flac_that_truly_declares_hundreds_of_hours_still_fails_from_its_header(tmp_path: Path):
    path = tmp_path / "long.flac"
    total = (1 << 36) - 1
    path.write_bytes(flac_with_total_samples(_sf_flac(TONE, SR), total))
    with pytest.raises(DurationExceeded) as err:
        open_audio(path, limits=Limits())
    assert str(err.value) == (
        f"duration {total / SR:.1f} s exceeds the limit of 14400 s (max_duration_s)"
    )


@pytest.mark.parametrize(
    "data",
    [
        piped(np.zeros((1, 0), np.float32), SR, format="flac", codec="flac", sample_format="s16"),
        streamed_wav(b"", sr=SR, channels=1, riff_size=0xFFFFFFFF, data_size=0),
        streamed_rf64(b"", sr=SR, channels=1),
    ],
    ids=["flac", "wav", "rf64"],
)
def test_streamed_header_with_no_audio_behind_it_is_empty(tmp_path: Path, data: bytes):
    path = tmp_path / "nothing.bin"
    path.write_bytes(data)
    with pytest.raises(EmptyAudio) as err:
        analyze_file(path)
    assert err.value.code == "empty_audio"


def _mislabelled_frames(path: Path) -> list[int]:
    """Where FFmpeg's Ogg demuxer gives a decoded frame a position other than its own.

    The true position is the count of samples decoded before the frame (the stream starts at
    0 in these files); the hostile case for a decoder that cuts by position.
    """
    found, counted = [], 0
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            if frame.pts != counted:
                found.append(counted)
            counted += frame.samples
    return found


@pytest.mark.parametrize("name", ["click120_cmajor.ogg", "speech_espeak.ogg"])
def test_vorbis_decodes_to_libvorbis_samples_from_any_start(samples_dir: Path, name: str):
    # Ogg Vorbis is decoded by FFmpeg (half libvorbis's CPU time); libvorbis itself, through
    # soundfile.read, is the reference. Starts include the frames FFmpeg mislabels, where a
    # cut by the frame's own position would be hundreds of samples off.
    path = samples_dir / name
    reference = sf.read(path, dtype="float32", always_2d=True)[0]
    mislabelled = _mislabelled_frames(path)
    assert len(mislabelled) >= 5
    starts = [0, 1, 4410, 50_000, reference.shape[0] - 1]
    starts += mislabelled[:3] + [p + 100 for p in mislabelled[-3:]]
    for start in starts:
        with open_audio(path, limits=Limits()) as source:
            assert (source.info.format, source.info.codec) == ("ogg", "vorbis")
            decoded = np.concatenate(list(source.blocks(start=start)))
        assert decoded.shape == reference[start:].shape, start
        np.testing.assert_allclose(
            decoded, reference[start:], rtol=0, atol=2e-6, err_msg=str(start)
        )
