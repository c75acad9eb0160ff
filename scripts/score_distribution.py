"""Distribution of the perceptual scores (``summary.scores``) over a set of audio files.

Runs the analysis pipeline's own steps on each file (decode with the features and loudness
pass, rhythm, then ``perceptual_scores``, as ``describe`` does; the standard profile unless
``--profile``) and prints one line per file, then the minimum, median and maximum of each
score over the files where it is not null, how many were null, and the CPU time the scores
took beside the whole analysis. With no files, the tracks of Debian's wesnoth-1.16-music
package (GPL, never committed): the benchmark tracks docs/result.md reports on.

    .venv/bin/python scripts/score_distribution.py [FILE ...] [--profile fast]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.analyze import _decode_and_extract  # noqa: E402
from analysis.decode import open_audio  # noqa: E402
from analysis.limits import Limits  # noqa: E402
from analysis.perceptual import SCORE_NAMES, perceptual_scores  # noqa: E402
from analysis.profiles import get_profile  # noqa: E402
from analysis.progress import ProgressReporter  # noqa: E402
from analysis.rhythm import rhythm  # noqa: E402

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files (default: wesnoth)")
    parser.add_argument("--profile", default="standard")
    args = parser.parse_args(argv)
    files = args.files or sorted(WESNOTH_MUSIC.glob("*.ogg"))
    if not files:
        parser.error(
            f"no files given and none under {WESNOTH_MUSIC} (apt install wesnoth-1.16-music)"
        )
    values: dict[str, list[float]] = {name: [] for name in SCORE_NAMES}
    nulls = dict.fromkeys(SCORE_NAMES, 0)
    short = {name: name[:5] for name in SCORE_NAMES}
    params = get_profile(args.profile)
    hop_s = params.hop_length / params.sr
    started = time.process_time()
    scoring = 0.0
    for path in files:
        with open_audio(path, limits=Limits()) as source:
            features, loudness, _ = _decode_and_extract(source, params, ProgressReporter(None))
        # The tempo as describe() makes it (with the band onsets), so the scores are the
        # service's.
        rhy = rhythm(
            features.series["onset_strength"],
            params.sr,
            hop_length=params.hop_length,
            bands=features.matrices.get("onset_bands"),
        )
        t0 = time.process_time()
        scores = perceptual_scores(features, rhy, loudness, hop_s=hop_s, n_mels=params.n_mels)
        scoring += time.process_time() - t0
        cells = []
        for name in SCORE_NAMES:
            value = scores[name]  # type: ignore[literal-required]
            if value is None:
                nulls[name] += 1
                cells.append(f"{short[name]}=null")
            else:
                values[name].append(value)
                cells.append(f"{short[name]}={value:.3f}")
        print(f"{path.stem[:28]:28} " + " ".join(cells), flush=True)
    total = time.process_time() - started
    print(f"\n{len(files)} files ({args.profile}): {total:.1f} s CPU in all, of which the scores")
    print(f"{scoring:.2f} s ({100 * scoring / total:.1f} %)\n")
    print("| score | min | median | max | null |")
    print("|---|---|---|---|---|")
    for name in SCORE_NAMES:
        v = values[name]
        row = f"{min(v):.2f} | {statistics.median(v):.2f} | {max(v):.2f}" if v else "- | - | -"
        print(f"| `{name}` | {row} | {nulls[name]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
