"""``analyze_file``: decode once, measure loudness on the way, then every feature from one STFT."""

from __future__ import annotations

import contextlib
from pathlib import Path

from analysis.decode import AudioSource, downmix, mono_resampler, open_audio
from analysis.document import Analysis, describe, file_sha256
from analysis.features import FeatureExtractor, Features
from analysis.jitcache import cache_librosa_kernels
from analysis.limits import Limits
from analysis.loudness import Loudness, LoudnessMeter
from analysis.profiles import DEFAULT_PROFILE, Profile, get_profile
from analysis.progress import Progress, ProgressReporter

__all__ = ["Analysis", "Progress", "analyze_file"]

# Before the first beat tracking: librosa's uncached kernel becomes a cached one (~2.4 s of JIT
# per process otherwise).
cache_librosa_kernels()

# Share of the overall progress each stage ends at. Stages are named for the work running
# from their report on: "decode+features" is the one streamed pass (decoding, resampling, the
# loudness meter and the STFT features block by block), most of the time; "features" finishes
# the per-file features; "rhythm" the tempo and beats; "key+structure" the key, sections and
# scores of describe(). docs/api.md lists them.
_DECODE_END = 0.85
_FEATURES_END = 0.88
# describe() says "rhythm" when the rhythm is done: what runs from then on is the rest.
_AFTER_DESCRIBE_STAGE = {"rhythm": "key+structure"}


def analyze_file(
    path: str | Path,
    *,
    profile: str = DEFAULT_PROFILE,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so a shared default is safe
    progress: Progress | None = None,
    source: AudioSource | None = None,
) -> Analysis:
    """Analyse one audio file on local disk.

    Parameters
    ----------
    path : str or Path
        The audio file; its decoder is chosen by content, not by extension.
    profile : str
        One of ``PROFILES``.
    limits : Limits
        Bounds on duration, rate, channels and decoded size, checked from the header and
        again while decoding.
    progress : callable(stage, fraction) or None
        Called with a stage name and the overall fraction done (strictly increasing, ending
        at 1.0). An exception it raises propagates out of ``analyze_file`` unchanged.
    source : AudioSource or None
        ``open_audio(path, limits=limits)`` already opened by the caller (to read the header
        first, as a worker does to plan a long file's chunks), none of its blocks read: its
        decoder is used rather than opening the file again. The caller closes it.

    Returns
    -------
    Analysis

    Raises
    ------
    InvalidAudio
        A subclass with a stable ``code`` when the file is unreadable, empty or over a limit.
    UnknownProfile
        When ``profile`` is not in ``PROFILES``.
    """
    params = get_profile(profile)
    report = ProgressReporter(progress)
    path = Path(path)
    report("decode+features", 0.0)
    opening = open_audio(path, limits=limits) if source is None else contextlib.nullcontext(source)
    with opening as opened:
        info = opened.info
        features, loudness, duration_s = _decode_and_extract(opened, params, report)
    report("rhythm", 0.9)
    analysis = describe(
        info,
        sha256=file_sha256(path),
        duration_s=duration_s,
        profile=profile,
        features=features,
        loudness=loudness,
        progress=lambda stage, fraction: report(_AFTER_DESCRIBE_STAGE.get(stage, stage), fraction),
    )
    report("done", 1.0)
    return analysis


def _decode_and_extract(
    source: AudioSource, params: Profile, report: ProgressReporter
) -> tuple[Features, Loudness, float]:
    """One pass over the file: native blocks feed the loudness meter, and their mono downmix,
    resampled, feeds the STFT feature pass. The signal itself is never held whole."""
    info = source.info
    sr = params.sr
    meter = LoudnessMeter(info.sample_rate, info.channels)
    extractor = FeatureExtractor(
        sr, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels
    )
    resample = mono_resampler(info.sample_rate, sr)
    decoded = 0
    for block in source.blocks():
        meter.add(block)
        extractor.push(resample(downmix(block)))
        decoded += block.shape[0]
        if info.frames:
            report("decode+features", _DECODE_END * min(decoded / info.frames, 1.0))
    extractor.push(resample(None))
    report("features", _DECODE_END)
    features = extractor.finish()
    report("features", _FEATURES_END)
    return features, meter.result(), extractor.n_samples / sr
