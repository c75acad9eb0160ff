"""Analysis CPU of two revisions on the same files, in turn: what an analysis change costs.

    python scripts/bench/ab_cpu.py REV FILE...    # REV (a temporary worktree) vs the working tree

Each side runs in its own process, pinned to one CPU when ``taskset`` exists, and imports
``analysis`` from its own tree; each file is analysed three times after a warm-up file and the
faster CPU time (``time.process_time``) counts. Sides alternate for ``--rounds`` rounds so a
drift in machine speed hits both; the ratio of each round is printed, then the median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from analysis import analyze_file
files = sys.argv[2:]
analyze_file(files[0])
total = 0.0
for f in files:
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        analyze_file(f)
        best = min(best, time.process_time() - t)
    total += best
print(total)
"""


def cpu_seconds(tree: Path, files: list[str]) -> float:
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    out = subprocess.run(
        [*pin, sys.executable, "-c", CHILD, str(tree), *files],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the revision to compare the working tree with")
    parser.add_argument("files", nargs="+", help="audio files (real, compressed music)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="earshot-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.rev],
            check=True,
        )
        try:
            ratios = []
            for r in range(args.rounds):
                a = cpu_seconds(base, args.files)
                b = cpu_seconds(ROOT, args.files)
                ratios.append(b / a)
                print(f"round {r + 1}: {args.rev} {a:.3f} s, working tree {b:.3f} s, x{b / a:.3f}")
            print(f"median ratio (working tree / {args.rev}): {statistics.median(ratios):.3f}")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
