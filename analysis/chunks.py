"""Chunked analysis of a long file: plan the split, analyse one chunk, merge the partials.

Several workers analyse the chunks of one file at the same time; each keeps only compact
sufficient statistics of the span it owns (a ``Partial``), and ``merge`` recomputes every
global quantity from them exactly as the single pass (``analyze_file``) does:

- frame series: each chunk owns frames ``[first, next chunk's first)`` of the whole file's
  frame grid and computes them from the same samples, so their concatenation is the single
  pass's series (onset envelope included); tempo, beats and onsets are then estimated on the
  merged envelope by the same functions, so nothing is stitched at a seam.
- loudness: each chunk keeps the K-weighted energy of the 100 ms steps it owns; gating over
  the concatenated steps is BS.1770 over the whole file, not an average of chunk loudnesses.
- MFCC, contrast and chroma: running sums and sums of squares, added up.

A chunk starts decoding ``overlap_s`` before its span so the resampler and the K-weighting
filter forget that they started mid-file before the first sample the chunk owns. That is all
the overlap is for: no estimate is made per chunk and averaged, so beat tracking needs none.

The module is over 500 lines on purpose: the plan's frame and step grid, the chunk pass that
cuts its samples (and its frames.csv rows) along it, and the merge that relies on the cut
tiling the file are one piece of arithmetic, read together; every step they share with
``analyze_file`` (decoding, downmix and resampling, the meter and its levels, features, the
document) is imported.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from analysis.decode import AudioInfo, downmix, mono_resampler, open_audio
from analysis.document import Analysis, describe, file_sha256
from analysis.errors import UnreadableAudio
from analysis.export import csv_rows, series_to_npz
from analysis.features import MATRICES, SERIES, FeatureExtractor, Features, Moments
from analysis.limits import Limits
from analysis.loudness import Levels, LoudnessMeter, loudness_from_steps, step_samples
from analysis.profiles import DEFAULT_PROFILE, get_profile
from analysis.progress import Progress, ProgressReporter

# Seconds decoded before a chunk's span: soxr's HQ filter and the K-weighting filter settle
# within tens of milliseconds, so one second leaves their start-up far below float32 noise.
DEFAULT_OVERLAP_S = 1.0


@dataclass(frozen=True)
class ChunkPlan:
    """How one file is split: what its header says, the profile and the chunk length.

    ``count`` chunks of ``chunk_s`` seconds each (the last one runs to the end of the file,
    whatever its real length). JSON-serialisable with ``to_dict`` / ``from_dict``.
    """

    profile: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    codec: str
    chunk_s: float
    overlap_s: float
    count: int

    @property
    def info(self) -> AudioInfo:
        return AudioInfo(
            sample_rate=self.sample_rate,
            channels=self.channels,
            frames=self.frames,
            format=self.format,
            codec=self.codec,
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkPlan:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def span(self, index: int) -> Span:
        """Frames, loudness steps and native samples chunk ``index`` owns."""
        if not 0 <= index < self.count:
            raise IndexError(f"chunk {index} of a plan with {self.count} chunks")
        params = get_profile(self.profile)
        step = step_samples(self.sample_rate)
        last = index == self.count - 1

        def frame(i: int) -> int:
            return round(i * self.chunk_s * params.sr / params.hop_length)

        def loudness_step(i: int) -> int:
            return round(i * self.chunk_s * self.sample_rate / step)

        return Span(
            index=index,
            first_frame=frame(index),
            end_frame=None if last else frame(index + 1),
            first_step=loudness_step(index),
            end_step=None if last else loudness_step(index + 1),
            step=step,
        )


@dataclass(frozen=True)
class Span:
    """What one chunk owns; ``None`` ends mean "to the end of the file" (the last chunk).

    Frames are on the analysis grid (``hop_length`` at the profile's rate); loudness steps
    of ``step`` native samples; the native samples a chunk owns for peak and clipping are
    ``[first_step * step, end_step * step)``.
    """

    index: int
    first_frame: int
    end_frame: int | None
    first_step: int
    end_step: int | None
    step: int


@dataclass
class Partial:
    """The sufficient statistics of one chunk (see the module docstring).

    Attributes
    ----------
    index : int
        The chunk's position in its plan.
    first_frame : int
        Frame number (in the whole file) of ``series``' first frame.
    series : dict[str, np.ndarray]
        Each name of ``features.SERIES``: float32 values of the frames the chunk owns.
    mfcc, contrast, chroma : Moments
        Running moments over the chunk's frames.
    matrices : dict[str, np.ndarray]
        Each name of ``features.MATRICES``: float32 ``(k, frames)`` of the frames the chunk owns.
    tuning : float
        The chunk's own tuning estimate (the merge reports chunk 0's, which is the file's).
    steps : np.ndarray [shape=(n_steps,)]
        K-weighted energy of each 100 ms loudness step the chunk owns, float64.
    peak : float
        Largest absolute sample value in the chunk's native samples.
    clipped, samples : int
        Clipped and all native samples (times channels) the chunk owns.
    end_sample : int
        Analysis-rate samples from the file's start to the end of what the chunk decoded;
        the last chunk's is the file's length.
    csv_rows : bytes or None
        The frames.csv rows of the frames the chunk owns (``partial_csv_rows``), formatted
        on the chunk's worker so that the merge only joins them; None in a partial stored
        before chunks formatted them (the merge formats those).
    """

    index: int
    first_frame: int
    series: dict[str, np.ndarray]
    mfcc: Moments
    contrast: Moments
    chroma: Moments
    matrices: dict[str, np.ndarray]
    tuning: float
    steps: np.ndarray
    peak: float
    clipped: int
    samples: int
    end_sample: int
    csv_rows: bytes | None = None

    def to_bytes(self) -> bytes:
        """An NPZ archive of the partial (uncompressed: it is read back once, soon)."""
        arrays: dict[str, Any] = {f"series_{name}": v for name, v in self.series.items()}
        arrays.update({f"matrix_{name}": v for name, v in self.matrices.items()})
        for name in ("mfcc", "contrast", "chroma"):
            moments: Moments = getattr(self, name)
            arrays[f"{name}_total"] = moments.total
            arrays[f"{name}_squares"] = moments.squares
            arrays[f"{name}_count"] = np.int64(moments.count)
        arrays["steps"] = self.steps
        scalars = (self.index, self.first_frame, self.clipped, self.samples, self.end_sample)
        arrays["ints"] = np.array(scalars, dtype=np.int64)
        arrays["floats"] = np.array([self.tuning, self.peak], dtype=np.float64)
        if self.csv_rows is not None:
            arrays["csv_rows"] = np.frombuffer(self.csv_rows, dtype=np.uint8)
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Partial:
        with np.load(io.BytesIO(data)) as npz:
            moments = {}
            for name in ("mfcc", "contrast", "chroma"):
                m = Moments(int(npz[f"{name}_total"].shape[0]))
                m.total = npz[f"{name}_total"]
                m.squares = npz[f"{name}_squares"]
                m.count = int(npz[f"{name}_count"])
                moments[name] = m
            index, first_frame, clipped, samples, end_sample = (int(v) for v in npz["ints"])
            tuning, peak = (float(v) for v in npz["floats"])
            return cls(
                index=index,
                first_frame=first_frame,
                series={name: npz[f"series_{name}"] for name in SERIES},
                mfcc=moments["mfcc"],
                contrast=moments["contrast"],
                chroma=moments["chroma"],
                matrices={name: npz[f"matrix_{name}"] for name in MATRICES},
                tuning=tuning,
                steps=npz["steps"],
                peak=peak,
                clipped=clipped,
                samples=samples,
                end_sample=end_sample,
                csv_rows=npz["csv_rows"].tobytes() if "csv_rows" in npz.files else None,
            )


def plan_chunks(
    info: AudioInfo,
    *,
    profile: str = DEFAULT_PROFILE,
    chunk_s: float,
    overlap_s: float = DEFAULT_OVERLAP_S,
) -> ChunkPlan:
    """Split a file of known length into chunks of about ``chunk_s`` seconds.

    Parameters
    ----------
    info : AudioInfo
        The header facts (``open_audio(path).info``); ``info.frames`` must be known.
    profile : str
        One of ``PROFILES``.
    chunk_s : float
        Seconds per chunk; the last chunk takes the remainder (between half and one and a
        half chunks), so no chunk is a sliver.
    overlap_s : float
        Seconds decoded before each chunk's span to settle the filters (not analysed twice).

    Returns
    -------
    ChunkPlan
        One chunk when the file is shorter than one and a half chunks.

    Raises
    ------
    UnknownProfile
        When ``profile`` is not in ``PROFILES``.
    ValueError
        When the header does not declare a length, or ``chunk_s``/``overlap_s`` are not
        positive with ``overlap_s`` below ``chunk_s``.
    """
    get_profile(profile)
    if info.frames is None:
        raise ValueError("the header declares no length: a file of unknown length is not split")
    if not 0 < overlap_s < chunk_s:
        raise ValueError(f"need 0 < overlap_s ({overlap_s}) < chunk_s ({chunk_s})")
    duration = info.frames / info.sample_rate
    count = max(1, round(duration / chunk_s))
    return ChunkPlan(
        profile=profile,
        sample_rate=info.sample_rate,
        channels=info.channels,
        frames=info.frames,
        format=info.format,
        codec=info.codec,
        chunk_s=float(chunk_s),
        overlap_s=float(overlap_s),
        count=count,
    )


def _preroll_frames(n_fft: int, hop_length: int) -> int:
    # A frame is exact once its window lies inside the decoded samples (n_fft // 2 after the
    # start); the onset envelope at frame t also needs frame t - 1 and is delayed by another
    # n_fft // (2 * hop) frames in FeatureExtractor.finish. Two frames to spare.
    half = -(-n_fft // (2 * hop_length))
    return 2 * half + 3


def analyze_chunk(
    path: str | Path,
    plan: ChunkPlan,
    index: int,
    *,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so a shared default is safe
    progress: Progress | None = None,
) -> Partial:
    """Analyse the span chunk ``index`` of ``plan`` owns.

    Parameters
    ----------
    path : str or Path
        The whole audio file (the chunk seeks to its span).
    plan : ChunkPlan
        The split, from ``plan_chunks``.
    index : int
        Which chunk, ``0 <= index < plan.count``.
    limits : Limits
        As for ``analyze_file``: the header is checked again.
    progress : callable(stage, fraction) or None
        Called with the fraction of the chunk done; an exception it raises propagates.

    Returns
    -------
    Partial

    Raises
    ------
    InvalidAudio
        As ``analyze_file``; ``UnreadableAudio`` also when the file ends before the span of
        a chunk that is not the last (its header overstated its length).
    """
    span = plan.span(index)
    params = get_profile(plan.profile)
    sr, hop, n_fft = params.sr, params.hop_length, params.n_fft
    report = ProgressReporter(progress)
    report("decode", 0.0)
    with open_audio(path, limits=limits) as source:
        rate, channels = source.info.sample_rate, source.info.channels
        if (rate, channels) != (plan.sample_rate, plan.channels):
            raise UnreadableAudio(
                f"the file changed: {rate} Hz x {channels} channels, planned for "
                f"{plan.sample_rate} Hz x {plan.channels}"
            )
        last = span.end_frame is None
        preroll = 0 if index == 0 else _preroll_frames(n_fft, hop)
        # Analysis samples the extractor sees: from `a_first` to `a_end` (None = to the end).
        a_first = (span.first_frame - preroll) * hop
        a_end = None if span.end_frame is None else span.end_frame * hop + n_fft // 2
        # Native samples for the meter and for peak/clipping.
        own_first = span.first_step * span.step
        own_end = None if span.end_step is None else span.end_step * span.step
        settle = 0 if index == 0 else math.ceil(plan.overlap_s * rate)
        # The resampler must start where a native sample and an analysis sample coincide, or
        # its output would sit between the single pass's samples.
        g = math.gcd(rate, sr)
        grid_native, grid_analysis = rate // g, sr // g
        res_start = max(0, (a_first * rate // sr - settle) // grid_native) * grid_native
        res_start_a = res_start // grid_native * grid_analysis
        meter_start = max(0, (own_first - settle) // span.step) * span.step
        start = min(res_start, meter_start)

        meter = LoudnessMeter(rate, channels)
        extractor = FeatureExtractor(sr, n_fft=n_fft, hop_length=hop, n_mels=params.n_mels)
        resample = mono_resampler(rate, sr)
        drop = a_first - res_start_a  # resampled samples before the extractor's first
        levels = Levels()  # of the native samples the chunk owns
        pos = start
        total = (own_end if own_end is not None else plan.frames) - own_first

        def feed(y: np.ndarray) -> bool:
            """Push resampled samples; True once the extractor has all it needs."""
            nonlocal drop
            if drop:
                skipped = min(drop, y.shape[0])
                drop -= skipped
                y = y[skipped:]
            if a_end is not None:
                y = y[: max(0, a_end - a_first - extractor.n_samples)]
            if y.shape[0]:
                extractor.push(y)
            return a_end is not None and a_first + extractor.n_samples >= a_end

        features_done = False
        for block in source.blocks(start=start):
            n = block.shape[0]
            end = pos + n
            if end > meter_start and (own_end is None or pos < own_end):
                lo = max(0, meter_start - pos)
                hi = n if own_end is None else min(n, own_end - pos)
                meter.add(block[lo:hi])
            if end > own_first and (own_end is None or pos < own_end):
                levels.add(block[max(0, own_first - pos) : n if own_end is None else own_end - pos])
            if not features_done and end > res_start:
                features_done = feed(resample(downmix(block[max(0, res_start - pos) :])))
            pos = end
            if total > 0:
                report("decode", 0.9 * min(max(pos - own_first, 0) / total, 1.0))
            if features_done and own_end is not None and pos >= own_end:
                break
        else:
            if not last:
                raise UnreadableAudio(
                    f"the stream ended at {pos / rate:.1f} s, inside chunk {index} of a file "
                    f"whose header declares {plan.frames / plan.sample_rate:.1f} s"
                )
            feed(resample(None))

    report("features", 0.9)
    features = extractor.finish()
    # The frames the chunk owns, on the last (frame) axis of each series and matrix.
    owned = slice(
        preroll, None if span.end_frame is None else preroll + span.end_frame - span.first_frame
    )
    series = {name: np.ascontiguousarray(v[..., owned]) for name, v in features.series.items()}
    matrices = {name: np.ascontiguousarray(v[..., owned]) for name, v in features.matrices.items()}
    first_meter_step = meter_start // span.step
    steps = meter.steps[span.first_step - first_meter_step :]
    if span.end_step is not None:
        steps = steps[: span.end_step - span.first_step]
    csv = partial_csv_rows(span.first_frame, series, hop_s=hop / sr)
    report("done", 1.0)
    return Partial(
        index=index,
        first_frame=span.first_frame,
        series=series,
        mfcc=features.mfcc,
        contrast=features.contrast,
        chroma=features.chroma,
        matrices=matrices,
        tuning=features.tuning,
        steps=steps,
        peak=levels.peak,
        clipped=levels.clipped,
        samples=levels.samples,
        end_sample=a_first + extractor.n_samples,
        csv_rows=csv,
    )


def partial_csv_rows(first_frame: int, series: dict[str, np.ndarray], *, hop_s: float) -> bytes:
    """The frames.csv rows of a chunk's frames, exactly as ``frames_to_csv`` writes them for
    the whole file.

    Parameters
    ----------
    first_frame : int
        Frame number (in the whole file) of the first frame of ``series``.
    series : dict[str, np.ndarray]
        Each name of ``features.SERIES``: the values of the chunk's frames.
    hop_s : float
        Seconds per frame.

    Returns
    -------
    bytes
        Frame ``i``'s time is ``i * hop_s`` as ``export.frame_times`` computes it over the
        whole file (the same float64 product), and its values the same float32 numbers the
        merged series hold, so the chunks' rows joined are the whole file's rows.
    """
    n = series["rms"].shape[0]
    times = np.arange(first_frame, first_frame + n) * hop_s
    return csv_rows(times, [series[name] for name in SERIES])


def merge(plan: ChunkPlan, partials: list[Partial], *, sha256: str) -> Analysis:
    """The ``Analysis`` of the whole file from the partials of every chunk of ``plan``.

    Parameters
    ----------
    plan : ChunkPlan
        The split the partials were made with.
    partials : list of Partial
        One per chunk, in any order.
    sha256 : str
        Hex SHA-256 of the file (the document's ``audio.sha256``).

    Returns
    -------
    Analysis
        The shape ``analyze_file`` returns; figures within the tolerances documented in
        docs/result.md ("Chunked analysis"). Its ``csv_rows`` and ``npz`` are set: the
        files ``export`` makes of the merged series, made already.

    Raises
    ------
    ValueError
        When the partials are not exactly the chunks of ``plan`` or do not tile the frames.
    """
    partials = sorted(partials, key=lambda p: p.index)
    if [p.index for p in partials] != list(range(plan.count)):
        raise ValueError(
            f"partials {[p.index for p in partials]} are not chunks 0..{plan.count - 1}"
        )
    expected = 0
    for p in partials:
        if p.first_frame != expected:
            raise ValueError(f"chunk {p.index} starts at frame {p.first_frame}, not {expected}")
        expected += p.series["rms"].shape[0]
    params = get_profile(plan.profile)
    series = {name: np.concatenate([p.series[name] for p in partials]) for name in SERIES}
    features = Features(
        series=series,
        mfcc=_sum_moments([p.mfcc for p in partials]),
        contrast=_sum_moments([p.contrast for p in partials]),
        chroma=_sum_moments([p.chroma for p in partials]),
        tuning=partials[0].tuning,
        matrices={
            name: np.concatenate([p.matrices[name] for p in partials], axis=1) for name in MATRICES
        },
    )
    duration_s = partials[-1].end_sample / params.sr
    # The steps of consecutive spans are the whole file's steps: gated as one signal.
    loudness = loudness_from_steps(
        np.concatenate([p.steps for p in partials]),
        step=step_samples(plan.sample_rate),
        levels=Levels(
            peak=max(p.peak for p in partials),
            clipped=sum(p.clipped for p in partials),
            samples=sum(p.samples for p in partials),
        ),
    )
    hop_s = params.hop_length / params.sr
    # The merge is the serial tail of a chunked job, and when it runs every other chunk is
    # done: frames.npz is compressed on a second thread while describe() runs (zlib releases
    # the GIL; an hour's NPZ is ~0.3 s of CPU). Both only read the series.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-npz") as pool:
        npz = pool.submit(series_to_npz, series, hop_s=hop_s)
        analysis = describe(
            plan.info,
            sha256=sha256,
            duration_s=duration_s,
            profile=plan.profile,
            features=features,
            loudness=loudness,
        )
        # frames.csv is most of an hour's result bytes: its rows were formatted by the
        # chunks, in parallel, and are only joined here (a partial without them: now).
        rows = tuple(
            p.csv_rows
            if p.csv_rows is not None
            else partial_csv_rows(p.first_frame, p.series, hop_s=hop_s)
            for p in partials
        )
        return replace(analysis, csv_rows=rows, npz=npz.result())


def analyze_file_chunked(
    path: str | Path,
    *,
    profile: str = DEFAULT_PROFILE,
    chunk_s: float,
    overlap_s: float = DEFAULT_OVERLAP_S,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so a shared default is safe
) -> Analysis:
    """Plan, analyse every chunk in turn, and merge: the chunked path in one process.

    The service runs the chunks on several workers (tasks/chunks.py); this is the same
    computation for a notebook and for the tests that hold it to ``analyze_file``.

    Parameters
    ----------
    path : str or Path
        The audio file.
    profile, limits
        As for ``analyze_file``.
    chunk_s, overlap_s
        As for ``plan_chunks``.

    Returns
    -------
    Analysis
    """
    with open_audio(path, limits=limits) as source:
        plan = plan_chunks(source.info, profile=profile, chunk_s=chunk_s, overlap_s=overlap_s)
    partials = [analyze_chunk(path, plan, i, limits=limits) for i in range(plan.count)]
    return merge(plan, partials, sha256=file_sha256(path))


def _sum_moments(parts: list[Moments]) -> Moments:
    total = Moments(parts[0].k)
    for m in parts:
        total.total = total.total + m.total
        total.squares = total.squares + m.squares
        total.count += m.count
    return total
