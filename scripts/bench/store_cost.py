"""What the job store's per-job statements cost the process that runs them, on PostgreSQL.

A scratch database (dropped afterwards), migrated as in production; N queued jobs, then each
per-job call N times in a row, one thread: the upload's ``create`` and ``find_cached_result``,
a status read's ``get``, the worker's ``claim`` and ``succeed``. Prints the process's CPU
time (user + system) and the wall time per call. Run it from two checkouts (a ``git
worktree`` of an older commit) to compare them: it measures the code it sits in.

    .venv/bin/python scripts/bench/store_cost.py [-n 400] [--rounds 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench.harness import postgres_database  # noqa: E402 - needs ROOT on sys.path

WARMUP = 50


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=400, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    from core.jobs import ANONYMOUS, JobStore
    from core.migrate import upgrade

    def new_job(store: JobStore, sha256: str = "0" * 64) -> str:
        job, _ = store.create(
            filename="clip.ogg", size_bytes=1, sha256=sha256, profile="standard", priority="batch"
        )
        return job.id

    with postgres_database() as url:
        upgrade(url)
        store = JobStore(url)
        try:
            for job_id in [new_job(store) for _ in range(WARMUP)]:  # pools, prepared plans
                store.claim(job_id)
                store.succeed(job_id, result_prefix=f"results/{job_id}", analyzer_version="v")
                store.get(job_id)
            for round_ in range(args.rounds):
                ids = [new_job(store) for _ in range(args.n)]
                calls: dict[str, Callable[[str], object]] = {
                    "create": lambda _: new_job(store, "1" * 64),
                    "find_cached_result": lambda _: store.find_cached_result(
                        owner=ANONYMOUS, sha256="2" * 64, profile="standard", analyzer_version="v"
                    ),
                    "get": store.get,
                    "claim": store.claim,
                    "succeed": lambda job_id: store.succeed(
                        job_id, result_prefix=f"results/{job_id}", analyzer_version="v"
                    ),
                }
                figures = []
                for name, call in calls.items():
                    cpu, wall = cpu_s(), time.perf_counter()
                    for job_id in ids:
                        call(job_id)
                    cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
                    figures.append(f"{name} {1000 * cpu / args.n:.3f}/{1000 * wall / args.n:.3f}")
                print(f"round {round_ + 1}, CPU/wall ms per call: " + ", ".join(figures))
        finally:
            store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
