"""Where a short job's CPU goes: CPU time per job of every process on the machine, by role.

Brings up one of `scripts/bench_pipelines.py`'s stacks (the seed, `earshot dev` or the
scaled-out one), sends a few warm-up clips, then sends CLIPS five-second clips through
UPLOADERS clients as that script does, reading user + system time of every process in /proc
before and after. Each process is put under a role by its command line (PostgreSQL, RabbitMQ,
the API, each worker process, this script's own HTTP clients, the rest of the machine). For
the scaled-out stack it also prints PostgreSQL's transactions per job (pg_stat_database).

    .venv/bin/python scripts/bench/process_cpu.py scaled [--uploaders 4] [--clips 100]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import bench_pipelines as pipelines  # noqa: E402 - needs ROOT on sys.path
from scripts.bench.harness import live_processes, process_cpu_s  # noqa: E402

STACKS = {
    "seed": pipelines.seed_stack,
    "dev": pipelines.earshot_dev_stack,
    "scaled": pipelines.earshot_scaled_stack,
}
WARMUP_CLIPS = 6


def role(pid: int, name: str, command: str) -> str:
    if "postgres" in name or "postgres" in command:
        return "postgres"
    if name.startswith(("beam", "erl", "epmd")):
        return "rabbitmq"
    if pid == os.getpid():
        return "bench clients"
    if "seed.py worker" in command:
        return "seed worker (all processes)"
    if "seed.py api" in command:
        return "seed api"
    if "earshot" in command and " worker" in command:
        return f"earshot worker process {pid}"
    if "earshot" in command and " dev" in command:
        return "earshot api (dev: api + its workers)"
    if " serve" in command:
        return "earshot api"
    return "rest of the machine"


def cpu_by_role() -> collections.Counter[str]:
    """User + system CPU seconds of every live process, summed by ``role``."""
    seconds: collections.Counter[str] = collections.Counter()
    for pid, name, fields in live_processes():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended meanwhile
        seconds[role(pid, name, command)] += process_cpu_s(fields)
    return seconds


def postgres_commits() -> int:
    """Transactions committed so far in the benchmarks' scratch databases (0 where PostgreSQL
    is not reachable). An idle backend reports its counts within 10 s (PGSTAT_IDLE_INTERVAL):
    read after a longer pause."""
    import time

    try:
        import psycopg
    except ImportError:
        return 0
    time.sleep(11.0)
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
            row = conn.execute(
                "SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database "
                "WHERE datname LIKE 'earshot_bench%'"
            ).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", choices=sorted(STACKS))
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--clips", type=int, default=100)
    args = parser.parse_args(argv)
    clips = pipelines.make_clips(5, WARMUP_CLIPS + args.clips)
    with (
        tempfile.TemporaryDirectory(prefix="earshot-process-cpu-") as tmp,
        STACKS[args.stack](Path(tmp)) as stack,
    ):
        pipelines.drive(stack, clips[:WARMUP_CLIPS], 2)
        scaled = args.stack == "scaled"
        commits = postgres_commits() if scaled else 0
        before = cpu_by_role()
        wall, _, _ = pipelines.drive(stack, clips[WARMUP_CLIPS:], args.uploaders)
        after = cpu_by_role()
        commits = postgres_commits() - commits if scaled else 0
    jobs = args.clips
    print(f"{stack.name}: {jobs} x 5 s clips, {args.uploaders} uploaders, {jobs / wall:.1f} jobs/s")
    print("| process | CPU ms per job |\n|---|---:|")
    for key in sorted(after):
        print(f"| {key} | {1000 * (after[key] - before.get(key, 0.0)) / jobs:.1f} |")
    total = sum(after.values()) - sum(before.values())
    print(f"| all | {1000 * total / jobs:.1f} |")
    print(f"(wall x CPUs per job: {1000 * wall * os.cpu_count() / jobs:.1f} ms)")  # type: ignore[operator]
    if scaled:
        # Each job-store statement autocommits: one transaction per statement.
        print(f"(PostgreSQL transactions per job: {commits / jobs:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
