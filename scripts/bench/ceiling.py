"""The machine's own ceiling for "an hour-long file, 2 processes against 1" (issue 15).

Run by scripts/bench_chunks.py in a fresh interpreter (one native thread per process, as the
workers run). It plans the file's chunks as the service does (default chunk settings), then
analyses every chunk with ``analysis.chunks.analyze_chunk`` outside the service: in one
process one after the other, and in two forked processes side by side, and merges once.
No broker, no job store, no blobs: what is left is the analysis and the machine. When two
processes side by side are slower each than one alone (shared caches and memory bandwidth,
or a host that gives two busy vCPUs less than two cores), this ratio is below 2, and the
service's ratio cannot exceed it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    args = parser.parse_args(argv)

    from analysis import warmup
    from analysis.chunks import analyze_chunk, merge, plan_chunks
    from analysis.decode import open_audio
    from analysis.document import file_sha256
    from analysis.limits import Limits
    from core.settings import Settings

    settings = Settings()
    with open_audio(args.path, limits=Limits()) as source:
        plan = plan_chunks(
            source.info, chunk_s=settings.chunk_duration_s, overlap_s=settings.chunk_overlap_s
        )
    warmup()  # JIT and first-call costs paid before the fork, as a worker pool does
    jobs = [(args.path, plan, i) for i in range(plan.count)]
    context = multiprocessing.get_context("fork")
    walls: dict[str, list[float]] = {"1": [], "2": []}
    partials: list[Any] = []
    for _ in range(args.repeat):
        for processes in (1, 2):
            started = time.perf_counter()
            with context.Pool(processes) as pool:
                partials = pool.starmap(analyze_chunk, jobs, chunksize=1)
            walls[str(processes)].append(time.perf_counter() - started)
    started = time.perf_counter()
    merge(plan, partials, sha256=file_sha256(args.path))
    merge_s = time.perf_counter() - started
    print(json.dumps({"chunks": plan.count, "walls": walls, "merge_s": merge_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
