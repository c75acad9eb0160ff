"""How often the meter's bar is right on the evaluation set (`make eval` builds .eval/).

A bar is right when ``beats_per_bar`` times the median beat interval is within 8 % of the
piece's bar (its meter's beats times the beat period of its tempo; 6/8 has two dotted-quarter
beats): a beat tracked at another metrical level with the bar length that matches it counts,
since the bar is what a listener would mark. The downbeats are scored too where the set's
bars start at 0 s (the additive-synthesis pieces and the drum grooves: chorales and folk tunes
may open with a pickup): the F-measure of ``downbeats_s`` against the bar starts, a downbeat
counting within 70 ms. Prints one line per source and meter.

    .venv/bin/python scripts/eval_meter.py [--eval-dir .eval]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import analyze_file

BEATS_IN_BAR = {"2/4": 2, "3/4": 3, "4/4": 4, "6/8": 2}
TOLERANCE = 0.08
# Sources whose bars start at 0 s, and how near a downbeat must be to a bar start.
BARS_FROM_ZERO = ("synth", "drums")
DOWNBEAT_WINDOW_S = 0.07


def downbeat_f(found: np.ndarray, truth: np.ndarray) -> float:
    """F-measure of ``found`` downbeats against ``truth``, each matching within the window."""
    if found.size == 0 or truth.size == 0:
        return 0.0
    near = np.abs(found[:, None] - truth[None, :]) <= DOWNBEAT_WINDOW_S
    precision, recall = near.any(axis=1).mean(), near.any(axis=0).mean()
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=Path(".eval"))
    args = parser.parse_args(argv)
    manifest = args.eval_dir / "manifest.csv"
    if not manifest.exists():
        print(f"no {manifest}: run `make eval` once to build the set", file=sys.stderr)
        return 2
    right: dict[tuple[str, str], list[bool]] = defaultdict(list)
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    fmeasure: dict[tuple[str, str], list[float]] = defaultdict(list)
    with manifest.open() as f:
        for row in csv.DictReader(f):
            summary = analyze_file(args.eval_dir / row["file"]).document["summary"]
            beats = np.asarray(summary["beats_s"])
            m = summary["meter"]["beats_per_bar"]
            bar = BEATS_IN_BAR[row["meter"]] * 60.0 / float(row["bpm"])
            ibi = float(np.median(np.diff(beats))) if beats.size > 2 else 0.0
            key = (row["source"], row["meter"])
            right[key].append(bool(ibi) and abs(m * ibi / bar - 1.0) < TOLERANCE)
            found[key].append(m)
            if row["source"] in BARS_FROM_ZERO:
                truth = np.arange(0.0, float(row["duration_s"]) - 0.1, bar)
                fmeasure[key].append(downbeat_f(np.asarray(summary["downbeats_s"]), truth))
    total = sum(sum(v) for v in right.values())
    count = sum(len(v) for v in right.values())
    print(f"bar right: {total}/{count} ({100.0 * total / count:.0f} %)")
    for (source, meter), hits in sorted(right.items()):
        values, counts = np.unique(found[(source, meter)], return_counts=True)
        spread = ", ".join(f"{v}: {c}" for v, c in zip(values, counts, strict=True))
        line = f"  {source:9s} {meter}  {sum(hits):3d}/{len(hits):<3d}  beats_per_bar {spread}"
        if fmeasure[(source, meter)]:
            line += f"  downbeat F {np.mean(fmeasure[(source, meter)]):.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
