"""Decoding: any file soundfile or PyAV can read, streamed in blocks of native-rate PCM.

The decoder is chosen by content, never by extension: libsndfile's probe first (wav, flac,
aiff, ogg/vorbis, opus, mp3), then FFmpeg through PyAV (m4a/aac and the rest). Ogg Vorbis,
the commonest compressed upload here, is probed by libsndfile but decoded by FFmpeg, in about
half libvorbis's CPU time (``AudioSource._vorbis_blocks``). Limits are checked against the
header before a sample is decoded, and again on the running count of decoded samples,
because a header can lie.

A header that leaves the length open is read as "unknown", never as a length: a stream
written to a pipe cannot go back to fill in its size, so a streamed FLAC says 0 samples
(libsndfile reports ``SF_COUNT_MAX``), a streamed WAV or RF64 says 0 or 0xFFFFFFFF bytes,
and raw MP3/ADTS carry no length at all (what a decoder reports is the file size over the
first frames' bit rate). Such a file is decoded and counted against the same limits.
"""

from __future__ import annotations

import io
from collections import Counter
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
from analysis.headers import PatchedFile, mpeg_declares_length, streamed_wav_size
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
        # Ogg Vorbis: FFmpeg decodes it, opened when blocks() is first asked for, so that
        # reading the header alone (a job's chunk plan) costs one open, not two.
        self._vorbis = False
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
            patch = streamed_wav_size(self.path)
            if patch is not None:
                self._raw = PatchedFile(self.path, at=patch[0], data=patch[1])
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
            if f.format == "MP3" and not mpeg_declares_length(self.path):
                frames = None
            if f.format == "OGG" and f.subtype == "VORBIS":
                self._vorbis = True
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
        the file; for Ogg Vorbis, an FFmpeg seek to a page a second earlier and a drop by
        position; otherwise a decode-and-drop through PyAV (whose seeks land on packet
        boundaries, and a chunk of a long file must start on the exact sample).

        Raises ``DurationExceeded`` / ``DecodedSizeExceeded`` as soon as the running count
        passes a limit, ``EmptyAudio`` if nothing decodes, ``UnreadableAudio`` on decoder errors.
        """
        if self._vorbis and self._av is None:
            self._av = _open_vorbis(self.path)
        if self._sf is not None and self._av is not None:
            raw = self._vorbis_blocks(start)
        elif self._sf is not None:
            raw = self._sf_blocks(start)
        else:
            raw = _skip(self._av_blocks(), start)
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

    def _vorbis_blocks(self, start: int) -> Iterator[np.ndarray]:
        """Ogg Vorbis through FFmpeg's decoder; the header facts stay libsndfile's.

        FFmpeg's Vorbis decoder takes ~0.55x the CPU time of libvorbis (which libsndfile
        bundles) for the same PCM to within float32 rounding (|difference| <= 5e-7), and it
        returns every sample the stream declares (libsndfile's libvorbis drops the last
        ~0.1 s of some files). Samples before ``start`` are dropped by position: decoded
        frames carry the position of their first sample (pts, in samples), but FFmpeg's Ogg
        demuxer mislabels the odd frame at a block-size change by a few hundred samples, so
        the position is the offset most frames agree on plus the count decoded since. That
        also drops the samples a stream places before time 0, as libvorbis does. A seek
        lands on an Ogg page at least a second before ``start``: the decoder's start-up is
        dropped with them, and what follows is sample for sample a decode from the start.
        """
        import av

        container = self._av
        stream = container.streams.audio[0]
        channels = self.info.channels
        if start > 0:
            try:
                container.seek(max(start - self.info.sample_rate, 0), stream=stream, backward=True)
            except av.FFmpegError as exc:
                raise UnreadableAudio(f"seeking to sample {start} failed: {_reason(exc)}") from exc
        block, filled, counted = np.empty((BLOCK_FRAMES, channels), np.float32), 0, 0
        offsets: Counter[int] = Counter()
        # Frames after the first kept sample gather in FFmpeg's AudioFifo (which refuses a frame
        # of another format, layout or rate), read out a block at a time: reading each frame's
        # planes in Python cost ~0.4x the decode itself.
        fifo: Any = None
        try:
            for frame in container.decode(stream):
                if fifo is not None:
                    frame.pts = None  # the positions are counted; the fifo checks set ones
                    fifo.write(frame)
                    while fifo.samples >= BLOCK_FRAMES - filled:
                        _fill(block, filled, fifo.read(BLOCK_FRAMES - filled))
                        yield block
                        block, filled = np.empty((BLOCK_FRAMES, channels), np.float32), 0
                    continue
                n = frame.samples
                if len(frame.planes) != channels or frame.format.name != "fltp":
                    raise UnreadableAudio(
                        f"unexpected decoder output ({frame.format.name}, {len(frame.planes)} "
                        f"planes for {channels} channels)"
                    )
                if frame.pts is not None:
                    offsets[frame.pts - counted] += 1
                position = (offsets.most_common(1)[0][0] if offsets else 0) + counted
                if start and (not offsets or position > start):
                    raise UnreadableAudio(f"seeking to sample {start} failed")
                used = min(max(start - position, 0), n)
                counted += n
                if used < n:  # the first kept sample: the rest of this frame starts the block
                    filled, fifo = _fill(block, 0, frame, used), av.AudioFifo()
            if fifo is not None and fifo.samples:
                filled = _fill(block, filled, fifo.read())
        except av.FFmpegError as exc:
            raise UnreadableAudio(f"decoding failed: {_reason(exc)}") from exc
        except ValueError as exc:  # the fifo refused a frame
            raise UnreadableAudio(f"unexpected decoder output: {exc}") from exc
        if filled:
            yield block[:filled]

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


def _fill(block: np.ndarray, filled: int, frame: Any, skip: int = 0) -> int:
    """Copy a planar float32 frame's samples (all but the first ``skip``) into ``block``."""
    n = frame.samples - skip
    for c, plane in enumerate(frame.planes):
        block[filled : filled + n, c] = np.frombuffer(plane, np.float32, frame.samples)[skip:]
    return filled + n


def _open_vorbis(path: Path) -> Any:
    """The Ogg Vorbis file opened by FFmpeg, or None to keep libsndfile's decoder."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError):
        return None
    streams = container.streams.audio
    # A stream whose first sample is not at time 0 (a live stream cut mid-way) would place
    # samples by positions libsndfile does not count from: such a file keeps libsndfile.
    if (
        len(streams) != 1
        or streams[0].codec_context.name != "vorbis"
        or (streams[0].start_time or 0) > 0
    ):
        container.close()
        return None
    return container


def _skip(blocks: Iterator[np.ndarray], start: int) -> Iterator[np.ndarray]:
    """The samples of ``blocks`` from sample ``start`` on."""
    for block in blocks:
        if start >= block.shape[0]:
            start -= block.shape[0]
            continue
        yield block[start:] if start else block
        start = 0


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
