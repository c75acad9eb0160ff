"""Decoding: any file soundfile or PyAV can read, streamed in blocks of native-rate PCM.

The decoder is chosen by content, never by extension: libsndfile's probe first (wav, flac,
aiff, ogg/vorbis, opus, mp3), then FFmpeg through PyAV (m4a/aac and the rest). Limits are
checked against the header before a sample is decoded, and again on the running count of
decoded samples, because a header can lie.

A header that leaves the length open is read as "unknown", never as a length: a stream
written to a pipe cannot go back to fill in its size, so a streamed FLAC says 0 samples
(libsndfile reports ``SF_COUNT_MAX``), a streamed WAV or RF64 says 0 or 0xFFFFFFFF bytes,
and raw MP3/ADTS carry no length at all (what a decoder reports is the file size over the
first frames' bit rate). Such a file is decoded and counted against the same limits.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from analysis.errors import (
    DecodedSizeExceeded,
    DurationExceeded,
    EmptyAudio,
    SampleRateOutOfRange,
    TooManyChannels,
    UnreadableAudio,
)
from analysis.limits import Limits

# Frames per block handed to the caller: ~1.5 s at 44.1 kHz, small enough to keep peak
# memory flat, large enough that per-block Python overhead is negligible.
BLOCK_FRAMES = 65536

# Decoders may round the last packet up; allow this much beyond the duration limit before
# calling the stream a liar.
_DURATION_SLACK_S = 1.0

# libsndfile's frame count for a length the header does not give (sf_count_t's maximum).
SF_COUNT_MAX = 0x7FFFFFFFFFFFFFFF

# FFmpeg demuxers of raw elementary streams: no length field, so their duration is the file
# size over the opening frames' bit rate. 65 s of ADTS that opens with 5 s of silence is
# "estimated" at 1132 s.
_ESTIMATED_LENGTH_FORMATS = frozenset({"aac", "ac3", "eac3", "dts", "loas", "mp3"})

# Where an MP3's first frame keeps its Xing/Info or VBRI tag: after the 4-byte frame header
# and at most 32 bytes of side information.
_MPEG_TAG_SPAN = 4 + 32 + 4


@dataclass(frozen=True)
class AudioInfo:
    """What the header says about a file.

    ``frames`` is the declared length in samples per channel, or ``None`` when the container
    does not say: a streamed file whose header was never filled in, or a raw stream whose
    length a decoder could only estimate. Such a file knows its length once decoded.
    """

    sample_rate: int
    channels: int
    frames: int | None
    format: str
    codec: str

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


class AudioSource:
    """An opened audio file: header facts in ``info``, PCM from ``blocks()``.

    Use as a context manager; ``blocks()`` can be iterated once.
    """

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self._sf: sf.SoundFile | None = None
        self._raw: io.FileIO | None = None
        self._av: Any = None
        try:
            self.info = self._open()
            check_header(self.info, limits)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
            self._sf = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._av is not None:
            self._av.close()
            self._av = None

    def _open(self) -> AudioInfo:
        if not self.path.is_file():
            raise UnreadableAudio(f"{self.path} is not a readable file")
        if self.path.stat().st_size == 0:
            raise EmptyAudio("file is empty (0 bytes)")
        try:
            self._sf = sf.SoundFile(self.path)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
            self._sf = None
        if self._sf is not None and self._sf.frames == 0:
            # libsndfile takes a WAV data size of 0 (a streamed header never filled in) or a
            # streamed RF64's zeroed ds64 sizes at their word and reads nothing of the audio
            # behind them, and so does FFmpeg for RF64. Read such a file with the data size
            # it would have had; anything else goes to FFmpeg, which finds nothing in a file
            # that is truly empty.
            self._sf.close()
            self._sf = None
            patch = _streamed_wav_size(self.path)
            if patch is not None:
                self._raw = _PatchedFile(self.path, at=patch[0], data=patch[1])
                try:
                    self._sf = sf.SoundFile(self._raw)
                except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
                    self._raw.close()
                    self._raw = None
        if self._sf is not None and self._sf.frames == SF_COUNT_MAX:
            # An unknown length (FLAC's total_samples = 0): libsndfile fails a seek after the
            # first 131072 samples of such a FLAC, FFmpeg reads it to the end.
            self._sf.close()
            self._sf = None
        if self._sf is not None:
            f = self._sf
            frames: int | None = int(f.frames)
            if f.format == "MP3" and not _mpeg_declares_length(self.path):
                frames = None
            return AudioInfo(
                sample_rate=int(f.samplerate),
                channels=int(f.channels),
                frames=frames,
                format=str(f.format).lower(),
                codec=str(f.subtype).lower(),
            )
        return self._open_av()

    def _open_av(self) -> AudioInfo:
        import av

        try:
            container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
            raise UnreadableAudio(f"not a decodable audio file: {_reason(exc)}") from exc
        self._av = container
        if not container.streams.audio:
            raise UnreadableAudio("no audio stream in the file")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        rate = int(ctx.sample_rate or stream.rate or 0)
        channels = int(ctx.channels or 0)
        if rate <= 0 or channels <= 0:
            raise UnreadableAudio(f"audio stream declares rate {rate} Hz and {channels} channels")
        frames: int | None = None
        if stream.duration is not None and stream.time_base is not None:
            frames = round(float(stream.duration * stream.time_base) * rate)
        elif container.duration is not None:
            frames = round(container.duration / av.time_base * rate)
        names = container.format.name.split(",")
        fmt = "mp4" if "mp4" in names else names[0]
        if fmt in _ESTIMATED_LENGTH_FORMATS or (frames is not None and frames <= 0):
            frames = None
        return AudioInfo(
            sample_rate=rate, channels=channels, frames=frames, format=fmt, codec=str(ctx.name)
        )

    def blocks(self, *, start: int = 0) -> Iterator[np.ndarray]:
        """Yield float32 blocks of shape (n, channels) at the native rate.

        ``start`` skips to that sample (per channel) first: a seek where libsndfile decodes
        the file, a decode-and-drop through PyAV (whose seeks land on packet boundaries, and
        a chunk of a long file must start on the exact sample).

        Raises ``DurationExceeded`` / ``DecodedSizeExceeded`` as soon as the running count
        passes a limit, ``EmptyAudio`` if nothing decodes, ``UnreadableAudio`` on decoder errors.
        """
        raw = self._sf_blocks(start) if self._sf is not None else _skip(self._av_blocks(), start)
        rate, channels = self.info.sample_rate, self.info.channels
        max_frames = (self.limits.max_duration_s + _DURATION_SLACK_S) * rate
        max_bytes = self.limits.max_decoded_bytes
        decoded = 0
        for block in raw:
            if block.shape[0] == 0:
                continue
            decoded += block.shape[0]
            if decoded > max_frames:
                raise DurationExceeded(
                    f"decoded duration passed {decoded / rate:.1f} s, over the limit of "
                    f"{self.limits.max_duration_s:g} s (max_duration_s)"
                )
            if decoded * channels * 4 > max_bytes:
                raise DecodedSizeExceeded(
                    f"decoded size passed {decoded * channels * 4} bytes, over the limit of "
                    f"{max_bytes} bytes (max_decoded_bytes)"
                )
            yield block
        if decoded == 0:
            raise EmptyAudio("no samples could be decoded (zero-length audio)")

    def _sf_blocks(self, start: int) -> Iterator[np.ndarray]:
        assert self._sf is not None
        f = self._sf
        if start:
            try:
                f.seek(start)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise UnreadableAudio(f"seeking to sample {start} failed: {exc}") from exc
        while True:
            try:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise UnreadableAudio(f"decoding failed: {exc}") from exc
            if block.shape[0] == 0:
                return
            yield block

    def _av_blocks(self) -> Iterator[np.ndarray]:
        import av

        container = self._av
        stream = container.streams.audio[0]
        # Planar float keeps the native rate and layout; one (channels, n) array per frame.
        resampler = av.AudioResampler(format="fltp")
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield _planar(out, self.info.channels)
            for out in resampler.resample(None):
                yield _planar(out, self.info.channels)
        except av.FFmpegError as exc:
            raise UnreadableAudio(f"decoding failed: {_reason(exc)}") from exc


def _skip(blocks: Iterator[np.ndarray], start: int) -> Iterator[np.ndarray]:
    """The samples of ``blocks`` from sample ``start`` on."""
    for block in blocks:
        if start >= block.shape[0]:
            start -= block.shape[0]
            continue
        yield block[start:] if start else block
        start = 0


class _PatchedFile(io.FileIO):
    """A file opened for reading as if ``data`` were written at offset ``at``.

    The upload itself is never modified; libsndfile reads through ``readinto``.
    """

    def __init__(self, path: Path, *, at: int, data: bytes) -> None:
        super().__init__(path, "rb")
        self._at, self._data = at, data

    def readinto(self, buffer: Any) -> int:
        start = self.tell()
        n = super().readinto(buffer) or 0
        lo, hi = max(start, self._at), min(start + n, self._at + len(self._data))
        if lo < hi:
            view = memoryview(buffer).cast("B")
            view[lo - start : hi - start] = self._data[lo - self._at : hi - self._at]
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self.fileno()).st_size - self.tell())
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(buffer)])


def _streamed_wav_size(path: Path) -> tuple[int, bytes] | None:
    """Where a streamed WAV/RF64 leaves its data size at 0, and the size the file implies.

    A writer that cannot seek back (``ffmpeg -f wav pipe:1 -rf64 always``, many recorders)
    leaves a RIFF data size of 0, or RF64's ds64 data size of 0, and writes the samples to
    the end of the file. Returns ``(offset, bytes)`` to read in place of the zero, or None
    when the file is not such a WAV or has no bytes after its data chunk header.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:] != b"WAVE":
            return None
        ds64_at: int | None = None
        pos = 12
        # Bounded: a streamed header holds a handful of chunks before its data.
        for _ in range(64):
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"ds64" and head[:4] != b"RIFF":
                ds64 = f.read(16)
                if len(ds64) < 16 or struct.unpack("<Q", ds64[8:])[0] != 0:
                    return None
                ds64_at = pos + 16
            elif name == b"data":
                payload = size - (pos + 8)
                if payload <= 0:
                    return None
                if head[:4] == b"RIFF":
                    return (
                        (pos + 4, struct.pack("<I", min(payload, 0xFFFFFFFF)))
                        if length == 0
                        else None
                    )
                return None if ds64_at is None else (ds64_at, struct.pack("<Q", payload))
            pos += 8 + length + (length & 1)
    return None


def _mpeg_declares_length(path: Path) -> bool:
    """Whether an MP3's first frame is a Xing/Info header with a frame count, or a VBRI header.

    Without one, libsndfile's length is an estimate from the first frame's bit rate: FFmpeg
    writes no Xing frame to a pipe, and a VBR stream that opens quietly is then "estimated" at
    five times its length.
    """
    with path.open("rb") as f:
        offset = 0
        # ID3v2 tags (cover art can make them megabytes) come before the first frame.
        for _ in range(4):
            f.seek(offset)
            tag = f.read(10)
            if len(tag) < 10 or tag[:3] != b"ID3":
                break
            # A "syncsafe" size: 7 bits in each of 4 bytes; a footer adds 10 more bytes.
            size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(tag[6:10]))
            offset += 10 + size + (10 if tag[5] & 0x10 else 0)
        f.seek(offset)
        head = f.read(4096)
    sync = next(
        (i for i in range(len(head) - 1) if head[i] == 0xFF and head[i + 1] & 0xE0 == 0xE0), None
    )
    if sync is None:
        return False
    frame = head[sync : sync + _MPEG_TAG_SPAN + 12]
    for name in (b"Xing", b"Info"):
        at = frame.find(name, 4, _MPEG_TAG_SPAN)
        if at >= 0:
            # Flag bit 0: a frame count follows the flags.
            flags = int.from_bytes(frame[at + 4 : at + 8], "big")
            return bool(flags & 1) and int.from_bytes(frame[at + 8 : at + 12], "big") > 0
    return frame.find(b"VBRI", 4, _MPEG_TAG_SPAN) == 36


def _reason(exc: Exception) -> str:
    # FFmpeg's str() ends with the file name: a server path that must not reach a client.
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def _planar(frame: Any, channels: int) -> np.ndarray:
    data = frame.to_ndarray()
    if data.shape[0] != channels:
        # A stream may change layout mid-file; such a file is not one signal.
        raise UnreadableAudio(f"channel count changed mid-stream ({channels} -> {data.shape[0]})")
    return np.ascontiguousarray(data.T, dtype=np.float32)


def check_header(info: AudioInfo, limits: Limits) -> None:
    """Refuse a file from what its header declares, before decoding.

    Raises
    ------
    SampleRateOutOfRange, TooManyChannels, EmptyAudio, DurationExceeded, DecodedSizeExceeded
    """
    if not limits.min_sample_rate <= info.sample_rate <= limits.max_sample_rate:
        raise SampleRateOutOfRange(
            f"sample rate {info.sample_rate} Hz is outside {limits.min_sample_rate}.."
            f"{limits.max_sample_rate} Hz (min_sample_rate/max_sample_rate)"
        )
    if info.channels > limits.max_channels:
        raise TooManyChannels(
            f"{info.channels} channels exceeds the limit of {limits.max_channels} (max_channels)"
        )
    if info.frames is None:
        return
    if info.frames == 0:
        raise EmptyAudio("the file declares zero samples (zero-length audio)")
    duration = info.frames / info.sample_rate
    if duration > limits.max_duration_s:
        raise DurationExceeded(
            f"duration {duration:.1f} s exceeds the limit of {limits.max_duration_s:g} s "
            "(max_duration_s)"
        )
    size = info.frames * info.channels * 4
    if size > limits.max_decoded_bytes:
        raise DecodedSizeExceeded(
            f"decoded size {size} bytes exceeds the limit of {limits.max_decoded_bytes} bytes "
            "(max_decoded_bytes)"
        )


def open_audio(path: str | Path, *, limits: Limits) -> AudioSource:
    """Open ``path`` for decoding after checking its header against ``limits``.

    Parameters
    ----------
    path : str or Path
        An audio file on local disk.
    limits : Limits
        Bounds on rate, channels, duration and decoded size.

    Returns
    -------
    AudioSource
        Close it (or use ``with``) when done.

    Raises
    ------
    InvalidAudio
        A subclass naming the broken rule.
    """
    return AudioSource(Path(path), limits)


def downmix(block: np.ndarray) -> np.ndarray:
    """The mean of the channels of a (n, channels) float32 block, as a 1-D float32 array."""
    if block.shape[1] == 1:
        return block[:, 0]
    # A matrix-vector product: ~30x faster than mean(axis=1) on interleaved blocks.
    return block @ np.full(block.shape[1], 1.0 / block.shape[1], dtype=np.float32)


def mono_resampler(rate: int, sr: int) -> Callable[[np.ndarray | None], np.ndarray]:
    """A streaming converter of mono native-rate blocks to ``sr`` (soxr, HQ).

    Call it with each block in order, then once with ``None`` to flush the filter's tail.
    At ``rate == sr`` blocks pass through unchanged.
    """
    if rate == sr:
        return lambda mono: mono if mono is not None else np.zeros(0, np.float32)
    stream = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
    flush = np.zeros(0, dtype=np.float32)
    return lambda mono: (
        stream.resample_chunk(mono) if mono is not None else stream.resample_chunk(flush, last=True)
    )


def decode_mono(
    path: str | Path,
    *,
    sr: int,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so a shared default is safe
) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file to one mono float32 signal at ``sr``.

    The analysis signal: channels averaged, then resampled with soxr (HQ), exactly as
    ``analyze_file`` streams it. Holds the whole signal, so prefer ``open_audio`` and
    ``blocks()`` for long files.

    Parameters
    ----------
    path : str or Path
        An audio file on local disk; its decoder is chosen by content.
    sr : int
        Target sample rate in Hz.
    limits : Limits
        Bounds checked from the header and while decoding.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]
    info : AudioInfo
        What the header said.

    Raises
    ------
    InvalidAudio
        A subclass naming the broken rule.
    """
    with open_audio(path, limits=limits) as source:
        resample = mono_resampler(source.info.sample_rate, sr)
        chunks = [resample(downmix(block)) for block in source.blocks()]
        chunks.append(resample(None))
        info = source.info
    return np.concatenate(chunks).astype(np.float32, copy=False), info
