"""What an analyze task costs outside ``analyze_file``: job-row writes, result files, follow-ups.

The task body (``tasks.analyze.run_analysis`` and ``after_end``, as a worker runs them) on an
embedded runtime (SQLite, local blobs) in this process, for JOBS distinct copies of one file;
``analyze_file`` is timed inside it, and the difference is the overhead. CPU time, so that a
busy machine inflates it less than wall time.

    .venv/bin/python scripts/bench/overhead.py FILE [--jobs 20] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of 10 jobs")
    args = parser.parse_args(argv)
    # As `earshot worker` runs its pool processes (one native thread each, earshot.cli).
    from earshot.cli import limit_native_threads

    limit_native_threads()
    import analysis
    import tasks.analyze as task
    from core.jobs import new_job_id
    from core.names import upload_key
    from core.runtime import build_runtime
    from core.settings import Settings

    inner: list[float] = []
    analyze_file = analysis.analyze_file

    def timed(*a: Any, **k: Any) -> Any:
        started = time.process_time()
        result = analyze_file(*a, **k)
        inner.append(time.process_time() - started)
        return result

    # run_analysis imports analyze_file from the package when it runs.
    analysis.analyze_file = timed  # type: ignore[assignment]
    data = args.file.read_bytes()
    with tempfile.TemporaryDirectory(prefix="earshot-overhead-") as tmp:
        runtime = build_runtime(Settings(data_dir=Path(tmp) / "var"))

        def one(i: int) -> float:
            job_id = new_job_id()
            body = data + i.to_bytes(4, "big")  # distinct bytes, as distinct uploads
            runtime.blobs.put_bytes(upload_key(job_id), body)
            runtime.jobs.create(
                job_id=job_id,
                upload_key=upload_key(job_id),
                filename=args.file.name,
                size_bytes=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                profile="standard",
                priority="batch",
            )
            started = time.process_time()
            status, ended = task._deliver(runtime, job_id, retry=lambda exc: None)
            if ended is not None:
                task.after_end(runtime, ended)
            if status != "succeeded":
                raise SystemExit(f"job {job_id} ended {status}")
            return time.process_time() - started

        one(0)  # warm-up, not counted
        inner.clear()
        outer = [one(i) for i in range(1, args.jobs + 1)]
        overhead = [1000 * (o - a) for o, a in zip(outer, inner, strict=True)]
        print(
            f"{args.jobs} jobs of {args.file.name}: task CPU ms median "
            f"{1000 * statistics.median(outer):.1f}, analyze_file "
            f"{1000 * statistics.median(inner):.1f}, outside it median "
            f"{statistics.median(overhead):.1f} (min {min(overhead):.1f})"
        )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(args.jobs + 1, args.jobs + 11):
                one(i)
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats("cumulative")
            stats.print_callees("_deliver|store_result|after_end")
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
