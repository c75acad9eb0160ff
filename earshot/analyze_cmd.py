"""``earshot analyze FILE...``: analyse audio files locally, without the queue or the API.

Prints one result document per file: JSON Lines with ``--json``, a short table otherwise;
``--view audio-features|audio-analysis`` prints that Spotify-shaped view instead (JSON Lines).
Folders are walked as ``earshot submit`` walks them (earshot/batch/discover.py). On a terminal,
stderr shows a progress line while each file is analysed. A file that fails is reported on
stderr with its reason and the others still run; the exit code is 1 if any file failed, 2 on a
usage error (a path that does not exist, no audio files found).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.profiles import DEFAULT_PROFILE, PROFILES
from earshot.batch.discover import DEFAULT_PATTERNS, discover
from earshot.client.errors import UsageError
from earshot.terminal import ProgressLine

if TYPE_CHECKING:
    from analysis import Analysis
    from analysis.schema import ResultDocument

# Mirrors analysis.PROFILES; kept literal so that `earshot --help` does not import librosa.
# tests/analysis/test_analyze_cmd.py checks that the two agree.

# The views of analysis.views (docs/spotify.md), by the names of their API routes.
VIEWS = ("audio-features", "audio-analysis")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="audio files, or folders to walk for audio files (as earshot submit does)",
    )
    parser.add_argument(
        "--pattern",
        action="append",
        metavar="GLOB",
        help="file name glob to pick from folders, repeatable (default: common audio "
        "extensions); a glob with '/' matches the path relative to the folder",
    )
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, choices=PROFILES, help="analysis profile"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document per line (JSON Lines)"
    )
    parser.add_argument(
        "--view",
        choices=VIEWS,
        help="print this Spotify-shaped view of each result instead, one JSON document per "
        "line (docs/spotify.md)",
    )


def run(name: str, args: argparse.Namespace) -> int:
    from earshot.service_cmd import use_installed_numba_cache

    use_installed_numba_cache()  # before the analysis imports numba
    from analysis import analyze_file
    from analysis.errors import InvalidAudio

    try:
        paths, ignored = _discover(args.files, args.pattern or DEFAULT_PATTERNS)
    except UsageError as exc:
        print(f"earshot analyze: error: {exc}", file=sys.stderr)
        return 2
    if ignored:
        print(
            f"earshot analyze: ignored {ignored} file(s) in the folders given: not audio by "
            "extension (--pattern picks others)",
            file=sys.stderr,
        )
    if not paths:
        print("earshot analyze: error: no audio files found in the given paths", file=sys.stderr)
        return 2

    progress = ProgressLine()
    failed = 0
    for number, path in enumerate(paths, start=1):
        progress.start(f"[{number}/{len(paths)}] {path}")
        started = time.monotonic()
        try:
            analysis = analyze_file(path, profile=args.profile, progress=progress)
        except InvalidAudio as exc:
            progress.clear()
            failed += 1
            print(f"earshot analyze: {path}: {exc.code}: {exc}", file=sys.stderr)
            continue
        progress.clear()
        if args.view:
            view = _view(args.view, analysis, analysis_time=time.monotonic() - started)
            line = json.dumps({"file": path, **view}, ensure_ascii=False, allow_nan=False)
            print(line, flush=True)
        elif args.json:
            document = {"file": path, **analysis.document}
            print(json.dumps(document, ensure_ascii=False, allow_nan=False), flush=True)
        else:
            print(_table(path, analysis.document), flush=True)
    return 1 if failed else 0


def _discover(raw_paths: list[str], patterns: tuple[str, ...] | list[str]) -> tuple[list[str], int]:
    """Files to analyse in the order given, folders walked; and how many files were ignored.

    Each argument is discovered on its own: unlike ``submit``, nothing is written per input,
    so two inputs with the same name in different folders are no collision. A file named
    directly keeps its spelling (it is the ``file`` of its JSON line).
    """
    paths: list[str] = []
    ignored = 0
    for raw in raw_paths:
        found = discover([raw], patterns=patterns)
        ignored += len(found.skipped)
        if Path(raw).is_file():
            paths.append(raw)
        else:
            paths.extend(str(inp.path) for inp in found.inputs)
    return paths, ignored


def _view(name: str, analysis: Analysis, *, analysis_time: float) -> dict[str, Any]:
    """The Spotify-shaped view ``name`` of a fresh analysis (no job: no id or URLs)."""
    from analysis.views import audio_analysis, audio_features

    if name == "audio-features":
        return dict(audio_features(analysis.document))
    return dict(
        audio_analysis(
            analysis.document,
            analysis.segments,
            timestamp=int(time.time()),
            analysis_time=analysis_time,
        )
    )


def _table(path: str, document: ResultDocument) -> str:
    audio, summary = document["audio"], document["summary"]
    tempo, key, loud = summary["tempo"], summary["key"], summary["loudness"]
    rows = [
        ("file", path),
        (
            "audio",
            f"{audio['duration_s']:.2f} s, {audio['sample_rate']} Hz, {audio['channels']} ch, "
            f"{audio['format']}/{audio['codec']}",
        ),
        ("tempo", f"{tempo['bpm']:.1f} BPM (confidence {tempo['confidence']:.2f})"),
        ("beats", f"{len(summary['beats_s'])}"),
        ("key", f"{key['tonic']} {key['mode']} (confidence {key['confidence']:.2f})"),
        (
            "loudness",
            f"{loud['integrated_lufs']:.1f} LUFS, range {loud['loudness_range_lu']:.1f} LU, "
            f"peak {loud['peak_dbfs']:.1f} dBFS, clipping {100 * loud['clipping_ratio']:.3f}%",
        ),
        ("centroid", f"{summary['spectral_centroid_hz']['mean']:.0f} Hz"),
        ("onsets", f"{summary['onset_rate_per_s']:.2f} per s"),
        ("silence", f"{100 * summary['silence_ratio']:.1f}%"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n"
