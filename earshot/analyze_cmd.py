"""``earshot analyze FILE...``: analyse audio files locally, without the queue or the API.

Prints one result document per file: JSON Lines with ``--json``, a short table otherwise;
``--view audio-features|audio-analysis`` prints that Spotify-shaped view instead (JSON Lines).
A file that fails is reported on stderr with its reason and the others still run; the exit
code is 1 if any file failed (argparse exits 2 on a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from analysis.profiles import DEFAULT_PROFILE, PROFILES

if TYPE_CHECKING:
    from analysis import Analysis
    from analysis.schema import ResultDocument

# Mirrors analysis.PROFILES; kept literal so that `earshot --help` does not import librosa.
# tests/analysis/test_analyze_cmd.py checks that the two agree.

# The views of analysis.views (docs/spotify.md), by the names of their API routes.
VIEWS = ("audio-features", "audio-analysis")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files to analyse")
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
    from analysis import analyze_file
    from analysis.errors import InvalidAudio

    failed = 0
    for path in args.files:
        started = time.monotonic()
        try:
            analysis = analyze_file(path, profile=args.profile)
        except InvalidAudio as exc:
            failed += 1
            print(f"earshot analyze: {path}: {exc.code}: {exc}", file=sys.stderr)
            continue
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
