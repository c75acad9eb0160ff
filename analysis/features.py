"""Frame-level features from one short-time Fourier transform, computed as the signal streams.

Neither the STFT of an hour of audio (1025 bins x 155k frames of complex64 is 1.3 GB) nor the
hour's signal itself (320 MB at 22050 Hz) fits the worker's memory budget, so samples are
pushed in as they are decoded and the STFT is computed in chunks of frames; each feature is
taken from the chunk's spectrogram and only compact per-frame series and running sums are
kept. Frames are exactly the frames ``librosa.stft(center=True)`` makes of the whole signal.

About 500 lines: every reduction of a block's spectrum is made while the block is in cache, so
they live in the one class that owns the block buffers (``FeatureExtractor``).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import librosa
import numpy as np
import scipy.fft
import scipy.sparse

from analysis.spectral import (
    contrast_bands,
    contrast_extremes,
    magnitude32,
    power_to_db,
    spectral_shape,
)
from analysis.tonal import estimate_tuning, frame_pitch_classes

# Per-frame vectors kept whole (``Features.matrices``): name -> rows.
# "pcp" is the key's pitch-class profile of spectral peaks (analysis.tonal.frame_pitch_classes).
# "onset_bands" is the onset strength of the mel bands below and above ONSET_SPLIT_HZ (rows 0
# and 1), for the tempo's bass-against-treble evidence (analysis.rhythm); unlike the
# "onset_strength" series it is not delayed by n_fft // (2 * hop) frames.
MATRICES = {"chroma": 12, "mfcc": 20, "pcp": 12, "onset_bands": 2}
# Bass drum and bass notes against snare, hats and chords: the mel bands centred below this
# are the low band of "onset_bands".
ONSET_SPLIT_HZ = 200.0
# Frames per STFT chunk: ~47 s at hop 512 and 22050 Hz. Spectral contrast's dB floor is
# relative to the chunk's loudest frame, as if spectral_contrast were called per chunk.
CHUNK_FRAMES = 2048
# Frames whose spectrum is computed and reduced at a time: 256 x 1025 float32 is 1 MB, so
# each pass over it stays in the CPU's cache, while numpy's per-call overhead is spread over
# enough frames (feature pass of a 214 s file, single core: 64 frames 124 ms, 128 118, 256
# 109, 512 136, whole 2048-frame chunks ~2x). Performance only; results do not depend on it.
BLOCK_FRAMES = 256
SERIES = (
    "rms",
    "zero_crossing_rate",
    "spectral_centroid_hz",
    "spectral_bandwidth_hz",
    "spectral_rolloff_hz",
    "spectral_flatness",
    "onset_strength",
)
# A frame whose RMS is below this (dB re full scale) is silent.
SILENCE_THRESHOLD_DB = -60.0
# Frames (from the first chunk's non-silent ones) the tuning estimate looks at: ~12 s.
TUNING_FRAMES = 512
# Log-mel values are floored this far below the log-mel peak of a full-scale sine (librosa's
# top_db, but absolute, so that chunks agree): without it the dB of near-empty bands is
# rounding noise, and the onset envelope of a steady tone would be too.
MEL_RANGE_DB = 80.0
# Spectral frames with less energy than this are silent: their centroid etc. are set to 0
# instead of the 0/0 that librosa's ratios would give.
_MIN_POWER = 1e-10
# float32 x < this exactly when float64(x) < -1e-10: librosa's zero-crossing test, which
# treats |x| <= 1e-10 as zero, without converting the signal to float64.
_NEGATIVE_BELOW = np.nextafter(np.float32(-1e-10), np.float32(0.0))


@dataclass
class Moments:
    """Running sum and sum of squares of a (k, n) feature, reduced over frames."""

    k: int
    total: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.total = np.zeros(self.k)
        self.squares = np.zeros(self.k)

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        self.total += x.sum(axis=1)
        self.squares += (x * x).sum(axis=1)
        self.count += x.shape[1]

    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    def std(self) -> np.ndarray:
        var = self.squares / max(self.count, 1) - self.mean() ** 2
        return np.sqrt(np.maximum(var, 0.0))


@dataclass
class Features:
    """What the spectral pass produces.

    ``series`` holds 1-D float32 arrays of ``n_frames``; ``mfcc``, ``contrast`` and ``chroma``
    hold running moments over frames; ``tuning`` is the estimated deviation from A440 in
    fractions of a chroma bin. ``matrices`` holds the per-frame vectors the structure and
    key analyses need, each float32 of shape ``(k, n_frames)``: ``"chroma"`` (12 pitch
    classes, C first, each frame max-normalised; silent frames near zero) and ``"mfcc"``
    (20 coefficients), and ``"pcp"`` (12 pitch classes of spectral peaks, in units of the
    frame's strongest semitone, computed on every other frame and held for the next, silent
    frames 0: the key's input, ``analysis.tonal``). An hour at
    hop 512 is ~25 MB of them.
    """

    series: dict[str, np.ndarray]
    mfcc: Moments
    contrast: Moments
    chroma: Moments
    tuning: float
    matrices: dict[str, np.ndarray] = field(default_factory=dict)


def n_frames(n_samples: int, hop_length: int) -> int:
    """Number of frames ``librosa.stft(center=True)`` makes of ``n_samples`` samples."""
    return 1 + n_samples // hop_length


class FeatureExtractor:
    """Streaming feature pass: ``push`` mono samples as they come, then ``finish()``.

    Parameters
    ----------
    sr : int
        Sample rate of the pushed signal in Hz.
    n_fft, hop_length : int
        STFT frame and hop in samples.
    n_mels, n_mfcc : int
        Mel bands (for MFCC and the onset envelope) and MFCC coefficients.
    chunk_frames : int
        STFT frames computed at a time; bounds memory, does not change the results.
    """

    def __init__(
        self,
        sr: int,
        *,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        n_mfcc: int = 20,
        chunk_frames: int = CHUNK_FRAMES,
    ) -> None:
        self.sr, self.n_fft, self.hop_length = sr, n_fft, hop_length
        self.n_mfcc = n_mfcc
        self.chunk_frames = chunk_frames
        self.n_samples = 0
        bases = _bases(sr, n_fft, n_mels, n_mfcc)
        self._freqs = bases.freqs
        self._moments = bases.moments
        self._window = bases.window
        self._mel_floor_db = bases.mel_floor_db
        self._mel_T = bases.mel_T
        self._low_mels = bases.low_mels
        self._contrast_bands = bases.contrast_bands
        self._dct = bases.dct
        self._windowed, self._spectrum = _scratch(n_fft)
        self._chroma_T: np.ndarray | None = None
        self._tuning = 0.0
        self._prev_mel_db: np.ndarray | None = None
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in SERIES}
        self._rows: dict[str, list[np.ndarray]] = {name: [] for name in MATRICES}
        self._mfcc = Moments(n_mfcc)
        self._contrast = Moments(7)
        self._chroma = Moments(12)
        # Pending samples; _buf[0] is sample number _buf_start of the signal. A centred STFT
        # pads n_fft // 2 zeros in front, hence the negative start.
        self._buf = np.zeros(n_fft // 2 + (chunk_frames + 1) * hop_length + n_fft, np.float32)
        self._buf_start = -(n_fft // 2)
        self._buf_len = n_fft // 2
        self._next_frame = 0

    def push(self, y: np.ndarray) -> None:
        """Append mono samples (1-D float32) and process every chunk of frames now complete."""
        self._append(y)
        self.n_samples += y.shape[0]
        while True:
            # Frames whose last sample has arrived: frame t ends at t*hop - n_fft//2 + n_fft.
            end = self._buf_start + self._buf_len
            ready = (end + self.n_fft // 2 - self.n_fft) // self.hop_length + 1
            if ready - self._next_frame < self.chunk_frames:
                break
            self._process(self._next_frame + self.chunk_frames)

    def finish(self) -> Features:
        """Process the remaining frames (zero-padded like a centred STFT) and return features."""
        total = n_frames(self.n_samples, self.hop_length)
        self._append(np.zeros(self.n_fft, np.float32))
        while self._next_frame < total:
            self._process(min(self._next_frame + self.chunk_frames, total))
        series = {name: np.concatenate(parts) for name, parts in self._parts.items()}
        for parts in self._parts.values():
            parts.clear()
        for name in SERIES:
            series[name] = series[name][:total].astype(np.float32, copy=False)
        # librosa.onset.onset_strength(center=True) delays the envelope by n_fft // (2 * hop)
        # frames so that peaks line up with the centred frames; do the same.
        shift = self.n_fft // (2 * self.hop_length)
        if shift:
            env = series["onset_strength"]
            env[shift:] = env[:-shift].copy()
            env[:shift] = 0.0
        # Each (k, frames) matrix is filled block by block, each block freed once copied: an
        # hour's blocks are ~30 MB, and concatenating them first held them twice more.
        matrices = {}
        for name, rows in self._rows.items():
            width = min(total, sum(block.shape[0] for block in rows))
            matrix = np.empty((MATRICES[name], width), np.float32)
            at = 0
            rows.reverse()
            while rows:
                block = rows.pop()
                m = min(block.shape[0], width - at)
                matrix[:, at : at + m] = block[:m].T
                at += m
            matrices[name] = matrix
        return Features(
            series=series,
            mfcc=self._mfcc,
            contrast=self._contrast,
            chroma=self._chroma,
            tuning=self._tuning,
            matrices=matrices,
        )

    def _append(self, y: np.ndarray) -> None:
        n = y.shape[0]
        if self._buf_len + n > self._buf.shape[0]:
            grown = np.zeros(self._buf_len + n + self._buf.shape[0] // 2, np.float32)
            grown[: self._buf_len] = self._buf[: self._buf_len]
            self._buf = grown
        self._buf[self._buf_len : self._buf_len + n] = y
        self._buf_len += n

    def _process(self, f1: int) -> None:
        f0, n_fft, hop = self._next_frame, self.n_fft, self.hop_length
        start = f0 * hop - n_fft // 2 - self._buf_start
        stop = (f1 - 1) * hop - n_fft // 2 + n_fft - self._buf_start
        seg = self._buf[start:stop]
        # Frames as rows of a strided view: frame t of the chunk starts at seg[t * hop].
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop]
        # Magnitudes computed while looking for the tuning, reused below (by first frame).
        done: dict[int, np.ndarray] = {}
        if self._chroma_T is None:
            done = self._find_tuning(frames, last=f1 * hop >= self.n_samples)

        rms, zcr = _time_domain(seg, n_fft, hop)
        self._parts["rms"].append(rms)
        self._parts["zero_crossing_rate"].append(zcr)
        n = f1 - f0
        voiced = np.empty(n, dtype=bool)
        valley = np.empty((n, len(self._contrast_bands)))
        peak = np.empty_like(valley)
        for b0 in range(0, n, BLOCK_FRAMES):
            b1 = min(b0 + BLOCK_FRAMES, n)
            S = done[b0] if b0 in done else self._magnitude(frames[b0:b1])
            self._spectral_block(S, voiced[b0:b1], valley[b0:b1], peak[b0:b1])
        # power_to_db's top_db is relative to the largest value of the chunk, as when
        # spectral_contrast is called on it.
        self._contrast.add((power_to_db(peak) - power_to_db(valley))[voiced].T)

        # Drop the samples no later frame needs.
        keep_from = f1 * hop - n_fft // 2 - self._buf_start
        remaining = self._buf_len - keep_from
        self._buf[:remaining] = self._buf[keep_from : self._buf_len]
        self._buf_start += keep_from
        self._buf_len = remaining
        self._next_frame = f1

    def _magnitude(self, frames: np.ndarray) -> np.ndarray:
        """|STFT| of (frames, n_fft) rows as (frames, bins) float32.

        As librosa: the windowed frames are transformed in float64, and the magnitude kept
        in float32. A float32 FFT would be twice as fast, but its rounding noise sits ~140 dB
        below a frame's peak, which is where the top band's spectral-contrast valleys (the
        bins soxr's anti-aliasing filter emptied) lie.
        """
        m = frames.shape[0]
        # Into buffers kept between blocks: fresh multi-megabyte temporaries are mapped
        # and faulted in by the kernel on every call, which tripled the cost of this step.
        windowed = np.multiply(frames, self._window, out=self._windowed[:m])
        spectrum = np.fft.rfft(windowed, axis=1, out=self._spectrum[:m])
        return magnitude32(spectrum)

    def _find_tuning(self, frames: np.ndarray, *, last: bool) -> dict[int, np.ndarray]:
        """Estimate tuning from the first ``TUNING_FRAMES`` frames with sound in ``frames``.

        Tuning is estimated once, from the first chunk with sound: chroma_stft's per-call
        estimate is its slow path, and tuning does not drift within a recording. Returns the
        magnitude blocks it computed, by first frame.
        """
        done: dict[int, np.ndarray] = {}
        found: list[np.ndarray] = []
        count = 0
        for b0 in range(0, frames.shape[0], BLOCK_FRAMES):
            S = done[b0] = self._magnitude(frames[b0 : b0 + BLOCK_FRAMES])
            sound = S[(S * S).sum(axis=1) > _MIN_POWER]
            found.append(sound[: TUNING_FRAMES - count])
            count += found[-1].shape[0]
            if count >= TUNING_FRAMES:
                break
        if count == 0 and not last:
            return done
        S = np.concatenate(found) if found else np.zeros((0, self._freqs.size), np.float32)
        self._tuning = estimate_tuning(S.T, self.sr, self.n_fft)
        # float32 like the spectrum: a float64 basis would upcast every chunk.
        self._chroma_T = np.ascontiguousarray(
            _chroma_basis(self.sr, self.n_fft, self._tuning).T, dtype=np.float32
        )
        return done

    def _spectral_block(
        self, S: np.ndarray, voiced: np.ndarray, valley: np.ndarray, peak: np.ndarray
    ) -> None:
        """Every spectral feature of a few consecutive frames, while they are in cache.

        Frames are rows (frames x bins, each frame contiguous), so every per-frame reduction
        reads memory in order. ``S`` is their magnitude spectrum (``_magnitude``). Fills
        ``voiced`` and the contrast ``valley`` / ``peak`` (converted to dB once per chunk);
        appends to the series and moments.
        """
        power = S * S
        np.greater(power.sum(axis=1), _MIN_POWER, out=voiced)
        for name, values in spectral_shape(S, power, self._freqs, self._moments).items():
            self._parts[name].append(np.where(voiced, values, 0.0))
        contrast_extremes(S, self._contrast_bands, valley, peak)

        # power_to_db(ref=1, amin=1e-10, top_db=None), written out to skip its input checks.
        mel = power @ self._mel_T
        mel_db = np.maximum(10.0 * np.log10(np.maximum(mel, 1e-10)), self._mel_floor_db)
        mfcc = mel_db @ self._dct
        self._mfcc.add(mfcc.T)
        self._rows["mfcc"].append(mfcc.astype(np.float32, copy=False))
        # Onset strength as librosa computes it: mean positive change of log-mel per frame,
        # carried across chunk boundaries.
        previous = mel_db[:1] if self._prev_mel_db is None else self._prev_mel_db
        diff = np.diff(np.concatenate([previous, mel_db], axis=0), axis=0)
        rise = np.maximum(diff, 0.0)
        self._parts["onset_strength"].append(rise.mean(axis=1))
        low = self._low_mels
        self._rows["onset_bands"].append(
            np.stack([rise[:, :low].mean(axis=1), rise[:, low:].mean(axis=1)], axis=1)
        )
        self._prev_mel_db = mel_db[-1:]

        if self._chroma_T is not None:
            chroma = power @ self._chroma_T
            # chroma_stft's max-normalisation per frame; silent frames stay (near) zero.
            top = chroma.max(axis=1, keepdims=True)
            chroma /= np.where(top > _MIN_POWER, top, 1.0)
            self._chroma.add(chroma[voiced].T)
            self._rows["chroma"].append(np.where(voiced[:, None], chroma, 0.0).astype(np.float32))
            # The key needs no 23 ms resolution: every other frame's profile, held for the next,
            # at half the cost (the same keys on the evaluation set's dev half).
            pcp = frame_pitch_classes(S[::2], self.sr, self.n_fft, self._tuning)
            pcp = np.repeat(pcp, 2, axis=0)[: S.shape[0]]
            self._rows["pcp"].append(np.where(voiced[:, None], pcp, np.float32(0.0)))
        else:
            # Before the first sound (no tuning yet, so no chroma basis): silent frames.
            self._rows["chroma"].append(np.zeros((S.shape[0], 12), np.float32))
            self._rows["pcp"].append(np.zeros((S.shape[0], 12), np.float32))


def segment_sums(matrix: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.add.reduceat(matrix.astype(np.float64), starts, axis=1)``, one row at a time.

    The same float64 sums (each row's segments are reduced alike) without a float64 copy of
    the whole (k, frames) matrix: 15-25 MiB for an hour's chroma or MFCC, which set the peak
    of the analysis of a long file.
    """
    out = np.empty((matrix.shape[0], len(starts)))
    for r in range(matrix.shape[0]):
        out[r] = np.add.reduceat(matrix[r].astype(np.float64), starts)
    return out


_SCRATCH = threading.local()


def _scratch(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's windowed-frame and spectrum buffers (``_magnitude``'s) for ``n_fft``.

    Kept for the thread's life, not made per file: they are 8 MiB, and each file's pair
    was a fresh 8 MiB block for the allocator to place while an hour-long file's arrays
    filled the heap (an hour-long file's peak RSS, after a warm-up file in the same
    process: 402.6 -> 396 MiB). Extractors may share them: ``_magnitude`` fills and reads
    them without yielding in between.
    """
    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = _SCRATCH.__dict__.setdefault("by_n_fft", {})
    if n_fft not in buffers:
        buffers[n_fft] = (
            np.empty((BLOCK_FRAMES, n_fft)),
            np.empty((BLOCK_FRAMES, 1 + n_fft // 2), np.complex128),
        )
    return buffers[n_fft]


@dataclass(frozen=True)
class _Bases:
    """Constant arrays of one (sr, n_fft, n_mels, n_mfcc): built once per process."""

    freqs: np.ndarray
    moments: np.ndarray
    window: np.ndarray
    mel_floor_db: float
    mel_T: scipy.sparse.csr_array
    low_mels: int
    contrast_bands: list[tuple[int, int, int]]
    dct: np.ndarray


@functools.cache
def _bases(sr: int, n_fft: int, n_mels: int, n_mfcc: int) -> _Bases:
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    mel_basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    return _Bases(
        freqs=freqs,
        # Sum, first and second moment of frequency in one (bins, 3) product per block, in
        # float64: the bandwidth is their difference E[f^2] - E[f]^2, which float32 would
        # round visibly for a pure tone (librosa computes it in float64 too).
        moments=np.stack([np.ones_like(freqs), freqs, freqs**2], axis=1),
        window=librosa.filters.get_window("hann", n_fft, fftbins=True),
        mel_floor_db=_full_scale_mel_db(mel_basis, sr, n_fft) - MEL_RANGE_DB,
        # A mel filter covers a few adjacent bins: ~2 nonzeros per bin instead of n_mels, so
        # the sparse product is ~60x fewer multiply-adds than the dense one.
        mel_T=scipy.sparse.csr_array(mel_basis.T.astype(np.float32)),
        # Mel bands are in increasing frequency: the low band is the first low_mels of them
        # (at least one, and one above, however coarse the mel scale).
        low_mels=int(
            np.clip(
                np.sum(librosa.mel_frequencies(n_mels + 2, fmax=sr / 2)[1:-1] < ONSET_SPLIT_HZ),
                1,
                n_mels - 1,
            )
        ),
        contrast_bands=contrast_bands(freqs, sr),
        # The first n_mfcc rows of the orthonormal DCT-II as an (n_mels, n_mfcc) matrix: one
        # small product instead of a full-length scipy.fft.dct per block (~15x faster).
        dct=np.ascontiguousarray(
            scipy.fft.dct(np.eye(n_mels), axis=0, type=2, norm="ortho")[:n_mfcc].T,
            dtype=np.float32,
        ),
    )


@functools.lru_cache(maxsize=64)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    # Tuning comes in steps of 0.01 semitone, so files share a handful of bases.
    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning)


def spectral_features(
    y: np.ndarray,
    sr: int,
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    n_mfcc: int = 20,
    chunk_frames: int = CHUNK_FRAMES,
) -> Features:
    """Compute every frame-level feature of a whole signal ``y`` held in memory.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32
        Mono signal.
    sr : int
        Sample rate of ``y`` in Hz.
    n_fft, hop_length, n_mels, n_mfcc, chunk_frames
        As for ``FeatureExtractor``.

    Returns
    -------
    Features
    """
    extractor = FeatureExtractor(
        sr,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        n_mfcc=n_mfcc,
        chunk_frames=chunk_frames,
    )
    extractor.push(np.asarray(y, dtype=np.float32))
    return extractor.finish()


def _time_domain(seg: np.ndarray, n_fft: int, hop_length: int) -> tuple[np.ndarray, np.ndarray]:
    """RMS and zero-crossing rate of every frame of ``seg`` (uncentred).

    Equal to ``librosa.feature.rms`` / ``zero_crossing_rate`` over the same frames, from
    per-hop sums (a frame is ``n_fft // hop_length`` consecutive hops) instead of an
    (n_fft, n_frames) array per feature.
    """
    n = (seg.shape[0] - n_fft) // hop_length + 1
    # librosa counts a crossing at i when sign(x[i]) != sign(x[i-1]) inside the frame,
    # treating |x| <= 1e-10 as zero and zero as positive.
    negative = seg < _NEGATIVE_BELOW
    changed = np.empty(seg.shape[0], dtype=np.int32)
    changed[0] = 0
    np.not_equal(negative[1:], negative[:-1], out=changed[1:])
    starts = np.arange(n) * hop_length
    if n_fft % hop_length == 0:
        hops = n_fft // hop_length
        m = n + hops - 1
        blocks = seg[: m * hop_length].reshape(m, hop_length)
        energy = _frame_sums(np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64), hops)
        crossings = _frame_sums(changed[: m * hop_length].reshape(m, hop_length).sum(axis=1), hops)
    else:
        cum_energy = np.concatenate([[0.0], np.cumsum(np.square(seg, dtype=np.float64))])
        energy = cum_energy[starts + n_fft] - cum_energy[starts]
        cum_changed = np.concatenate([[0], np.cumsum(changed)])
        crossings = cum_changed[starts + n_fft] - cum_changed[starts]
    # A frame's first sample has no predecessor inside the frame.
    crossings = crossings - changed[starts]
    rms = np.sqrt(np.maximum(energy, 0.0) / n_fft)
    return rms, crossings / n_fft


def _frame_sums(per_hop: np.ndarray, hops: int) -> np.ndarray:
    """Sums of ``hops`` consecutive values: per-hop totals to per-frame totals."""
    out = per_hop[: per_hop.shape[0] - hops + 1].copy()
    for k in range(1, hops):
        out += per_hop[k : k + out.shape[0]]
    return out


def _full_scale_mel_db(mel_basis: np.ndarray, sr: int, n_fft: int) -> float:
    """Peak log-mel power (dB) of a full-scale 1 kHz sine, the reference for MEL_RANGE_DB."""
    t = np.arange(n_fft) / sr
    frame = np.hanning(n_fft + 1)[:-1] * np.sin(2 * np.pi * 1000.0 * t)
    power = np.abs(np.fft.rfft(frame)) ** 2
    return float(librosa.power_to_db(np.max(mel_basis @ power), top_db=None))
