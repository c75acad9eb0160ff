"""One measurement, run by scripts/bench.py in a fresh interpreter.

Pins itself to one CPU before anything heavy is imported, optionally runs a warm-up analysis
that is not counted, then runs one pipeline over the given files and prints one JSON line:
import time, per-run wall and CPU seconds, and the process's peak RSS.

This file is deliberately standalone (stdlib at module level, pipelines imported lazily) so the
import cost of each pipeline is part of what it measures, not of the harness.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

Pipeline = Callable[[str], dict[str, Any]]

# Exit code the parent reads as "this pipeline does not exist in this checkout yet".
EXIT_UNAVAILABLE = 3


def decode_pipeline() -> Pipeline:
    """The decode floor: the whole file to float32 with soundfile, nothing else."""
    import soundfile as sf

    def run(path: str) -> dict[str, Any]:
        y, sr = sf.read(path, dtype="float32", always_2d=True)
        return {"frames": int(y.shape[0]), "sr": int(sr)}

    return run


def ffmpeg_decode_pipeline() -> Pipeline:
    """FFmpeg's decoder alone: PyAV's frames, each frame's planes read in place.

    earshot decodes Ogg Vorbis with the same decoder; since 26a684b it reads the frames out of
    FFmpeg's AudioFifo a block at a time, which costs less Python per frame than this loop.

    The planes are read as float32, the format of FFmpeg's Vorbis (and most lossy) decoders;
    for another format the count is still right and the values are not used.
    """
    import av
    import numpy as np

    def run(path: str) -> dict[str, Any]:
        frames = 0
        with av.open(path) as container:
            for frame in container.decode(container.streams.audio[0]):
                frames += min(
                    np.frombuffer(plane, np.float32, frame.samples).size for plane in frame.planes
                )
        return {"frames": frames}

    return run


def tutorial_pipeline() -> Pipeline:
    """What a tutorial FastAPI + Celery worker does: load, then every feature from ``y``.

    Each call recomputes its own spectrogram from ``y``, as in the librosa tutorials and the
    blog posts they spawned; where librosa's own docs reuse a result (tempo from the onset
    envelope), so do we, to keep the comparison fair. The summary step (means, key by
    Krumhansl-Schmuckler correlation of the mean chroma) is what such a worker returns as JSON.
    Integrated loudness (LUFS) is left out: librosa has none, and a tutorial would add
    pyloudnorm and re-read the file, so leaving it out only flatters the tutorial pipeline.
    """
    import librosa
    import numpy as np

    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

    def key_of(chroma: np.ndarray) -> str:
        profile = chroma.mean(axis=1)
        best = max(
            (float(np.corrcoef(np.roll(p, k), profile)[0, 1]), f"{names[k]} {mode}")
            for p, mode in ((major, "major"), (minor, "minor"))
            for k in range(12)
        )
        return best[1]

    def run(path: str) -> dict[str, Any]:
        y, sr = librosa.load(path)
        tempo, beats = librosa.beat.beat_track(y=y, sr=sr)
        chroma = librosa.feature.chroma_stft(y=y, sr=sr)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
        centroid = librosa.feature.spectral_centroid(y=y, sr=sr)
        bandwidth = librosa.feature.spectral_bandwidth(y=y, sr=sr)
        rolloff = librosa.feature.spectral_rolloff(y=y, sr=sr)
        flatness = librosa.feature.spectral_flatness(y=y)
        contrast = librosa.feature.spectral_contrast(y=y, sr=sr)
        zcr = librosa.feature.zero_crossing_rate(y)
        rms = librosa.feature.rms(y=y)
        onset_env = librosa.onset.onset_strength(y=y, sr=sr)
        global_tempo = librosa.feature.tempo(onset_envelope=onset_env, sr=sr)
        onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
        return {
            "duration_s": float(len(y) / sr),
            "bpm": float(np.atleast_1d(global_tempo)[0]),
            "beat_bpm": float(np.atleast_1d(tempo)[0]),
            "n_beats": len(beats),
            "key": key_of(chroma),
            "mfcc_mean": mfcc.mean(axis=1).tolist(),
            "centroid_hz": float(centroid.mean()),
            "bandwidth_hz": float(bandwidth.mean()),
            "rolloff_hz": float(rolloff.mean()),
            "flatness": float(flatness.mean()),
            "contrast": contrast.mean(axis=1).tolist(),
            "zcr": float(zcr.mean()),
            "rms": float(rms.mean()),
            "onset_strength": float(onset_env.mean()),
            "onset_rate_per_s": float(len(onsets) / (len(y) / sr)),
            "peak": float(np.abs(y).max()),
        }

    return run


def earshot_pipeline() -> Pipeline:
    """earshot's own analysis, standard profile, default limits."""
    # A checkout from before the analysis core landed has the package but not the function;
    # any other import error is a real bug and should fail loudly.
    import analysis

    analyze_file = getattr(analysis, "analyze_file", None)
    if analyze_file is None:
        print("analysis.analyze_file does not exist yet", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)

    def run(path: str) -> dict[str, Any]:
        result = analyze_file(path, profile="standard")
        document = result.document
        frames = result.frames
        return {
            "document_keys": sorted(document),
            "n_frame_series": len(frames),
        }

    return run


PIPELINES: dict[str, Callable[[], Pipeline]] = {
    "decode": decode_pipeline,
    "decode_ffmpeg": ffmpeg_decode_pipeline,
    "tutorial": tutorial_pipeline,
    "earshot": earshot_pipeline,
}


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run: Pipeline, path: str) -> dict[str, Any]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = run(path)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"file": path, "wall_s": wall, "cpu_s": cpu, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), required=True)
    parser.add_argument("--cpu", type=int, required=True, help="the one CPU to run on")
    parser.add_argument("--warmup", help="file analysed once first and not counted")
    parser.add_argument("--repeat", type=int, default=1, help="runs per file")
    parser.add_argument(
        "--cprofile", type=int, default=0, help="profile the runs, print the top N to stderr"
    )
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    # Before numpy is imported, so BLAS and numba thread pools see one CPU as well.
    os.sched_setaffinity(0, {args.cpu})

    t0 = time.perf_counter()
    run = PIPELINES[args.pipeline]()
    import_s = time.perf_counter() - t0

    warmup = timed(run, args.warmup) if args.warmup else None
    rss_after_warmup = peak_rss_mib()

    profiler = cProfile.Profile() if args.cprofile else None
    runs = []
    for path in args.files:
        for _ in range(args.repeat):
            if profiler is not None:
                profiler.enable()
            runs.append(timed(run, path))
            if profiler is not None:
                profiler.disable()

    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative")
        stats.print_stats(args.cprofile)
        print(out.getvalue(), file=sys.stderr)

    report = {
        "pipeline": args.pipeline,
        "cpu": args.cpu,
        "import_s": import_s,
        "warmup": warmup,
        "peak_rss_after_warmup_mib": rss_after_warmup,
        "runs": runs,
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
