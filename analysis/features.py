"""Frame-level features from one short-time Fourier transform, computed as the signal streams.

Neither the STFT of an hour of audio (1025 bins x 155k frames of complex64 is 1.3 GB) nor the
hour's signal itself (320 MB at 22050 Hz) fits the worker's memory budget, so samples are
pushed in as they are decoded and the STFT is computed in chunks of frames; each feature is
taken from the chunk's spectrogram and only compact per-frame series and running sums are
kept. Frames are exactly the frames ``librosa.stft(center=True)`` makes of the whole signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import librosa
import numpy as np
import scipy.fft

# Frames per STFT chunk: ~47 s at hop 512 and 22050 Hz, 17 MB of complex64 spectrum.
CHUNK_FRAMES = 2048
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
    fractions of a chroma bin.
    """

    series: dict[str, np.ndarray]
    mfcc: Moments
    contrast: Moments
    chroma: Moments
    tuning: float


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
        self._freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
        self._mel_basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        self._mel_floor_db = _full_scale_mel_db(self._mel_basis, sr, n_fft) - MEL_RANGE_DB
        self._chroma_basis: np.ndarray | None = None
        self._tuning = 0.0
        self._prev_mel_db: np.ndarray | None = None
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in SERIES}
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
        for name in SERIES:
            series[name] = series[name][:total].astype(np.float32, copy=False)
        # librosa.onset.onset_strength(center=True) delays the envelope by n_fft // (2 * hop)
        # frames so that peaks line up with the centred frames; do the same.
        shift = self.n_fft // (2 * self.hop_length)
        if shift:
            env = series["onset_strength"]
            env[shift:] = env[:-shift].copy()
            env[:shift] = 0.0
        return Features(
            series=series,
            mfcc=self._mfcc,
            contrast=self._contrast,
            chroma=self._chroma,
            tuning=self._tuning,
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
        f0, n_fft, hop, sr = self._next_frame, self.n_fft, self.hop_length, self.sr
        start = f0 * hop - n_fft // 2 - self._buf_start
        stop = (f1 - 1) * hop - n_fft // 2 + n_fft - self._buf_start
        seg = self._buf[start:stop]
        D = librosa.stft(seg, n_fft=n_fft, hop_length=hop, center=False)
        S = np.abs(D)
        del D
        power = S * S
        voiced = power.sum(axis=0) > _MIN_POWER

        if self._chroma_basis is None and (np.any(voiced) or f1 * hop >= self.n_samples):
            # Tuning is estimated once, from the first chunk with sound: chroma_stft's per-call
            # estimate is its slow path, and tuning does not drift within a recording.
            self._tuning = _estimate_tuning(S[:, voiced][:, :TUNING_FRAMES], sr, n_fft)
            # float32 like the spectrum: a float64 basis would upcast every chunk.
            self._chroma_basis = librosa.filters.chroma(
                sr=sr, n_fft=n_fft, tuning=self._tuning
            ).astype(np.float32)

        rms, zcr = _time_domain(seg, n_fft, hop)
        self._parts["rms"].append(rms)
        self._parts["zero_crossing_rate"].append(zcr)
        for name, values in _spectral_shape(S, power, self._freqs).items():
            self._parts[name].append(np.where(voiced, values, 0.0))
        self._contrast.add(
            librosa.feature.spectral_contrast(S=S, sr=sr, freq=self._freqs, n_fft=n_fft)[:, voiced]
        )

        # power_to_db(ref=1, amin=1e-10, top_db=None), written out to skip its input checks.
        mel_db = np.maximum(
            10.0 * np.log10(np.maximum(self._mel_basis @ power, 1e-10)), self._mel_floor_db
        )
        self._mfcc.add(scipy.fft.dct(mel_db, axis=0, type=2, norm="ortho")[: self.n_mfcc])
        # Onset strength as librosa computes it: mean positive change of log-mel per frame,
        # carried across chunk boundaries.
        previous = mel_db[:, :1] if self._prev_mel_db is None else self._prev_mel_db
        diff = np.diff(np.concatenate([previous, mel_db], axis=1), axis=1)
        self._parts["onset_strength"].append(np.maximum(diff, 0.0).mean(axis=0))
        self._prev_mel_db = mel_db[:, -1:]

        if self._chroma_basis is not None:
            chroma = self._chroma_basis @ power
            # chroma_stft's max-normalisation per frame; silent frames stay (near) zero.
            peak = chroma.max(axis=0)
            chroma /= np.where(peak > _MIN_POWER, peak, 1.0)
            self._chroma.add(chroma[:, voiced])

        # Drop the samples no later frame needs.
        keep_from = f1 * hop - n_fft // 2 - self._buf_start
        remaining = self._buf_len - keep_from
        self._buf[:remaining] = self._buf[keep_from : self._buf_len]
        self._buf_start += keep_from
        self._buf_len = remaining
        self._next_frame = f1


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
    """RMS and zero-crossing rate of every frame of ``seg`` (uncentred), from running sums.

    Equal to ``librosa.feature.rms`` / ``zero_crossing_rate`` over the same frames, in O(n)
    instead of materialising an (n_fft, n_frames) array per feature.
    """
    x = seg.astype(np.float64)
    starts = np.arange(0, seg.shape[0] - n_fft + 1, hop_length)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    rms = np.sqrt(np.maximum(energy[starts + n_fft] - energy[starts], 0.0) / n_fft)
    # librosa counts a crossing at i when sign(x[i]) != sign(x[i-1]) inside the frame,
    # treating |x| <= 1e-10 as zero and zero as positive.
    negative = (x < 0) & (np.abs(x) > 1e-10)
    crossings = np.concatenate([[0], np.cumsum(negative[1:] != negative[:-1])])
    zcr = (crossings[starts + n_fft - 1] - crossings[starts]) / n_fft
    return rms, zcr


def _spectral_shape(S: np.ndarray, power: np.ndarray, freqs: np.ndarray) -> dict[str, np.ndarray]:
    """Centroid, bandwidth, 85% roll-off (Hz) and flatness of each frame of ``S``.

    librosa's definitions (``spectral_centroid``, ``spectral_bandwidth(p=2)``,
    ``spectral_rolloff(roll_percent=0.85)``, ``spectral_flatness``) with the magnitude
    normalised once instead of once per feature.
    """
    total = S.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    f = freqs.astype(S.dtype)
    centroid = (f @ S) / safe
    # Var = E[f^2] - E[f]^2: two matrix-vector products instead of an (n_bins, n) temporary.
    spread = ((f * f) @ S) / safe - centroid * centroid
    cumulative = np.cumsum(S, axis=0)
    rolloff_bin = np.argmax(cumulative >= 0.85 * cumulative[-1], axis=0)
    floored = np.maximum(power, 1e-10)
    flatness = np.exp(np.mean(np.log(floored), axis=0)) / np.mean(floored, axis=0)
    return {
        "spectral_centroid_hz": centroid,
        "spectral_bandwidth_hz": np.sqrt(np.maximum(spread, 0.0)),
        "spectral_rolloff_hz": freqs[rolloff_bin],
        "spectral_flatness": flatness,
    }


def _full_scale_mel_db(mel_basis: np.ndarray, sr: int, n_fft: int) -> float:
    """Peak log-mel power (dB) of a full-scale 1 kHz sine, the reference for MEL_RANGE_DB."""
    t = np.arange(n_fft) / sr
    frame = np.hanning(n_fft + 1)[:-1] * np.sin(2 * np.pi * 1000.0 * t)
    power = np.abs(np.fft.rfft(frame)) ** 2
    return float(librosa.power_to_db(np.max(mel_basis @ power), top_db=None))


def _estimate_tuning(S: np.ndarray, sr: int, n_fft: int) -> float:
    if S.shape[1] == 0 or not np.any(S > 0):
        return 0.0
    tuning = float(librosa.estimate_tuning(S=S, sr=sr, n_fft=n_fft))
    return tuning if np.isfinite(tuning) else 0.0
