"""`make bench` (chunks part): a long file through real `earshot worker` processes (issue #6).

Issue #6 asks that a long file split into chunks and analysed by two worker processes finish at
least 1.7x faster than with one. This runs the 60-minute bench file (`--quick`: the 30-minute
one, both built by scripts/bench.py under .bench/) through the embedded mode a user starts
with `earshot worker`: a `filesystem://` broker, SQLite and local blobs in a temporary data
folder. Three configurations, each a fresh worker (after its warm-up) analysing the file
`--repeat` times, one job after the other:

- single pass: chunking off (EARSHOT_CHUNK_MIN_DURATION_S above the file's length), 1 process;
- chunked, `--concurrency 1`;
- chunked, `--concurrency 2`.

Wall time runs from the publish (the same call the API makes after an upload) until the job
reads succeeded. CPU time is that of every process of the worker over the same span. The
chunked result is then compared with the single pass's (tempo, key, beats, loudness, means).
Then the same chunks run outside the service (scripts/bench/ceiling.py: one process, then two
side by side, no broker or job store), which bounds what the service's ratio can reach on this
machine. The figures are printed and written into docs/benchmarks.md between their own markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Appended, not prepended: with --ref the exported commit goes first and is the code measured.
sys.path.append(str(ROOT))

from scripts.bench.harness import (  # noqa: E402 - needs ROOT on sys.path
    Child,
    HarnessError,
    child_env,
    run_earshot,
    write_section,
)

# The packages imported by the worker and by this script: the working tree, or with --ref a
# commit exported under .bench/ so a neighbour's half-saved edit cannot crash the run.
CODE = ROOT
PACKAGES = ("analysis", "core", "tasks", "api", "earshot")
DOC = ROOT / "docs" / "benchmarks.md"
CACHE = ROOT / ".bench"
# Above scripts/bench.py's mark (it rewrites everything below it), between these two.

MINUTES = 60
QUICK_MINUTES = 30
TARGET_SPEEDUP = 1.7
# Bounds on waits so a broken worker fails the run instead of hanging it; not speed targets.
START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 1200.0
POLL_S = 0.02
# Celery's line for every task that returned (its own run time, measured in the pool process).
TASK_LINE = re.compile(r"Task (earshot\.[\w.]+)\[([^\]]+)\] succeeded in ([0-9.e-]+)s")


class BenchError(Exception):
    """Raised when the chunk benchmark cannot run: no file, a worker died, a job failed."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Config:
    name: str
    concurrency: int
    chunked: bool


CONFIGS = (
    Config("single pass, 1 process", 1, chunked=False),
    Config("chunked, --concurrency 1", 1, chunked=True),
    Config("chunked, --concurrency 2", 2, chunked=True),
)


@dataclass
class Run:
    """One job: wall and CPU seconds from publish to succeeded, and when each stage began."""

    wall_s: float
    cpu_s: float
    load: float
    stages: dict[str, float]  # stage -> seconds after the publish when it was first seen
    tasks: list[tuple[str, float]]  # (task name, seconds it ran) from the worker's log
    document: dict[str, Any]


@dataclass
class Result:
    config: Config
    runs: list[Run] = field(default_factory=list)
    ready_s: float = 0.0

    @property
    def wall_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def cpu_s(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs)

    @property
    def best_s(self) -> float:
        return min(r.wall_s for r in self.runs)


# --- the worker --------------------------------------------------------------------------


class Worker(Child):
    """`earshot worker` on the analysis queues, in its own session, logging to a file.

    Plots (the render queue) are left to a pool of their own, as `earshot dev` and the compose
    file run them: a render of the previous job would otherwise hold a pool process while the
    next job is timed.
    """

    def __init__(self, env: dict[str, str], concurrency: int, log_path: Path) -> None:
        from core.names import Queue

        super().__init__(
            [
                "worker",
                f"--queues={Queue.INTERACTIVE.value},{Queue.BATCH.value}",
                f"--concurrency={concurrency}",
            ],
            env=env,
            log_path=log_path,
            cwd=CODE,
        )

    def wait_ready(self) -> float:
        return self.wait_worker_ready(timeout=START_TIMEOUT_S)

    def tasks_since(self, offset: int) -> list[tuple[str, float]]:
        text = self.log_path.read_bytes()[offset:].decode(errors="replace")
        return [(m[1], float(m[3])) for m in TASK_LINE.finditer(text)]


def worker_env(data_dir: Path, *, chunked: bool) -> dict[str, str]:
    # A JIT cache of its own, kept between runs: every worker after the first loads it.
    # One thread per pool process, as a deployment with one process per core should run.
    env = child_env(
        data_dir, CACHE / "numba-chunks", code=CODE, single_thread=True, log_format="json"
    )
    if not chunked:
        env["EARSHOT_CHUNK_MIN_DURATION_S"] = str(10 * 24 * 3600)
    return env


@contextlib.contextmanager
def running_worker(config: Config, workdir: Path) -> Iterator[tuple[Worker, Any]]:
    from core.runtime import build_runtime
    from core.settings import Settings

    data_dir = workdir / "var"
    env = worker_env(data_dir, chunked=config.chunked)
    run_earshot(["migrate"], env=env, cwd=CODE)
    worker = Worker(env, config.concurrency, workdir / "worker.log")
    runtime = build_runtime(Settings(data_dir=data_dir))
    try:
        yield worker, runtime
    finally:
        worker.stop()
        runtime.close()


def analyse_once(worker: Worker, runtime: Any, path: Path, data: bytes) -> Run:
    """Store the file as an upload, publish its job as the API does, follow it to the end."""
    from core.jobs import new_job_id
    from core.names import RESULT_JSON, Priority, upload_key

    job_id = new_job_id()
    runtime.blobs.put_bytes(upload_key(job_id), data)
    job, _ = runtime.jobs.create(
        job_id=job_id,
        upload_key=upload_key(job_id),
        filename=path.name,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        profile="standard",
        priority=Priority.BATCH.value,
    )
    log_offset = worker.log_path.stat().st_size
    load = os.getloadavg()[0]
    cpu0 = worker.cpu_s()
    t0 = time.perf_counter()
    runtime.publish(job)
    stages: dict[str, float] = {}
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        current = runtime.jobs.get(job_id)
        now = time.perf_counter() - t0
        stages.setdefault(current.stage or current.status.value, now)
        if current.status.finished:
            break
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"job {job_id} unfinished after {JOB_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    cpu = worker.cpu_s() - cpu0
    if current.status.value != "succeeded":
        raise BenchError(
            f"job {job_id} ended {current.status.value}: {current.error_code} "
            f"{current.error_message}\n{worker.log()[-3000:]}"
        )
    document = json.loads(runtime.blobs.get_bytes((current.result_prefix or "") + RESULT_JSON))
    time.sleep(0.5)  # the task's "succeeded in" line is written just after the job's row
    return Run(wall, cpu, load, stages, worker.tasks_since(log_offset), document)


@dataclass
class Ceiling:
    """The same chunks analysed outside the service (scripts/bench/ceiling.py)."""

    chunks: int
    one_s: list[float]  # every chunk in one process, one after the other
    two_s: list[float]  # the same in two processes side by side
    merge_s: float

    @property
    def chunk_ratio(self) -> float:
        return statistics.median(self.one_s) / statistics.median(self.two_s)

    @property
    def ratio(self) -> float:
        """What the service's 1-vs-2 ratio would be with no overhead at all: the chunk phase
        as measured here, plus the serial merge in both."""
        one = statistics.median(self.one_s) + self.merge_s
        return one / (statistics.median(self.two_s) + self.merge_s)


def machine_ceiling(path: Path, repeat: int) -> Ceiling:
    with tempfile.TemporaryDirectory(prefix="earshot-bench-ceiling-") as tmp:
        env = child_env(Path(tmp) / "var", CACHE / "numba-chunks", code=CODE, single_thread=True)
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench" / "ceiling.py"),
                str(path),
                f"--repeat={repeat}",
            ],
            cwd=CODE,
            env=env,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
    if done.returncode != 0:
        raise BenchError(f"scripts/bench/ceiling.py exited {done.returncode}:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Ceiling(
        chunks=report["chunks"],
        one_s=report["walls"]["1"],
        two_s=report["walls"]["2"],
        merge_s=report["merge_s"],
    )


def measure(config: Config, path: Path, repeat: int) -> Result:
    result = Result(config)
    with (
        tempfile.TemporaryDirectory(prefix="earshot-bench-chunks-") as tmp,
        running_worker(config, Path(tmp)) as (worker, runtime),
    ):
        result.ready_s = worker.wait_ready()
        data = path.read_bytes()
        for i in range(repeat):
            log(f"  {config.name}: run {i + 1}/{repeat} …")
            run = analyse_once(worker, runtime, path, data)
            log(f"    {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU, load {run.load:.2f}")
            result.runs.append(run)
    return result


# --- comparing results -------------------------------------------------------------------


def differences(single: dict[str, Any], chunked: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, single pass, chunked vs single) rows for the report."""
    a, b = single["summary"], chunked["summary"]
    rows = [
        ("tempo BPM", f"{a['tempo']['bpm']:.2f}", f"{b['tempo']['bpm'] - a['tempo']['bpm']:+.2g}"),
        (
            "key",
            f"{a['key']['tonic']} {a['key']['mode']}",
            "equal"
            if (a["key"]["tonic"], a["key"]["mode"]) == (b["key"]["tonic"], b["key"]["mode"])
            else f"{b['key']['tonic']} {b['key']['mode']}",
        ),
    ]
    beats_a, beats_b = a["beats_s"], b["beats_s"]
    if len(beats_a) == len(beats_b):
        gap = max((abs(x - y) for x, y in zip(beats_a, beats_b, strict=True)), default=0.0)
        beats = f"same count, max difference {gap * 1000:.1f} ms"
    else:
        beats = f"{len(beats_b) - len(beats_a):+d} beats"
    rows.append(("beats", str(len(beats_a)), beats))
    rows.append(
        (
            "onset rate (/s)",
            f"{a['onset_rate_per_s']:.4f}",
            f"{b['onset_rate_per_s'] - a['onset_rate_per_s']:+.2g}",
        )
    )
    for name in ("integrated_lufs", "loudness_range_lu", "peak_dbfs", "rms_mean_db"):
        x, y = a["loudness"][name], b["loudness"][name]
        rows.append((f"loudness.{name}", f"{x:.3f}", f"{y - x:+.2g}"))
    rows.append(
        (
            "frames",
            str(single["frames"]["count"]),
            "equal"
            if single["frames"]["count"] == chunked["frames"]["count"]
            else f"{chunked['frames']['count'] - single['frames']['count']:+d}",
        )
    )
    for name, value in a.items():
        if isinstance(value, dict) and "mean" in value:
            x, y = _flat(value["mean"]), _flat(b[name]["mean"])
            rel = max(abs(p - q) / max(abs(p), 1e-12) for p, q in zip(x, y, strict=True))
            # Against the spread too: a coefficient near zero (MFCC) makes any relative
            # difference look large.
            spread = _flat(value["std"]) if "std" in value else x
            of_std = max(abs(p - q) / max(s, 1e-12) for p, q, s in zip(x, y, spread, strict=True))
            rows.append(
                (
                    f"{name}.mean",
                    _short(x),
                    f"max relative difference {rel:.1e}; max difference / std {of_std:.1e}",
                )
            )
    return rows


def _flat(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def _short(values: list[float]) -> str:
    return f"{values[0]:.4g}" if len(values) == 1 else f"{len(values)} values"


# --- report ------------------------------------------------------------------------------


def phases(run: Run) -> str:
    """When each stage was first seen, e.g. `running 0.1 · chunks 0.9 · merging 12.3`."""
    return " · ".join(f"{stage} {t:.1f}" for stage, t in run.stages.items())


def task_times(run: Run) -> str:
    by_name: dict[str, list[float]] = {}
    for name, seconds in run.tasks:
        by_name.setdefault(name.removeprefix("earshot."), []).append(seconds)
    return "; ".join(
        f"{len(v)} {name}: {', '.join(f'{s:.1f}' for s in v)}" for name, v in by_name.items()
    )


def render(
    *,
    argv: list[str],
    started: datetime.datetime,
    path: Path,
    duration_s: float,
    results: list[Result],
    ceiling: Ceiling,
) -> str:
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if CODE != ROOT:
        revision = f"{CODE.name.removeprefix('chunks-ref-')} (exported)"
    single, one, two = results
    lines = [
        f"## Chunked analysis across worker processes (issue #6), run of {started:%Y-%m-%d %H:%M}"
        " UTC",
        "",
        f"`{shlex_join(argv)}` at `{revision}` on {os.cpu_count()} CPUs: `{path.name}` "
        f"({duration_s / 60:.0f} min, stereo 44.1 kHz Ogg Vorbis) through a real `earshot "
        "worker` in embedded mode (filesystem:// broker, SQLite, local blobs); default chunk "
        "settings (600 s chunks over 1200 s). Wall time from publish to succeeded, median of "
        f"{len(single.runs)}; CPU time of the worker and its pool processes over the same span.",
        "",
        "| configuration | wall s (median) | wall s (best) | CPU s | load avg at submit "
        "| worker ready s | stages first seen (s after publish) "
        "| tasks (s each, from the worker log) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for res in results:
        run = min(res.runs, key=lambda r: abs(r.wall_s - res.wall_s))
        lines.append(
            f"| {res.config.name} | {res.wall_s:.1f} | {res.best_s:.1f} | {res.cpu_s:.1f} "
            f"| {', '.join(f'{r.load:.2f}' for r in res.runs)} | {res.ready_s:.1f} "
            f"| {phases(run)} | {task_times(run)} |"
        )
    speedup = one.wall_s / two.wall_s
    mark = "✓" if speedup >= TARGET_SPEEDUP else "✗"
    best = one.best_s / two.best_s
    best_mark = "✓" if best >= TARGET_SPEEDUP else "✗"
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---:|---|",
        f"| chunked: 1 process wall / 2 processes wall | {speedup:.2f} {mark} "
        f"| ≥ {TARGET_SPEEDUP} |",
        f"| the same, best runs | {best:.2f} {best_mark} | ≥ {TARGET_SPEEDUP} |",
        f"| single pass wall / chunked 2 processes wall | {single.wall_s / two.wall_s:.2f} | |",
        f"| chunked 1 process CPU / single pass CPU (cost of chunking) "
        f"| {one.cpu_s / single.cpu_s:.2f} | |",
        "",
        "The machine's ceiling for that ratio (`scripts/bench/ceiling.py`, run right after): the "
        f"same {ceiling.chunks} chunks analysed outside the service, with `analysis.chunks."
        "analyze_chunk` in one process one after the other and in two forked processes side by "
        f"side (median of {len(ceiling.one_s)}), then merged once ({ceiling.merge_s:.1f} s). "
        "Two processes side by side that each run slower than one alone (shared caches and "
        "memory bandwidth, or a host that gives two busy vCPUs less than two cores) put this "
        "below 2, and the service cannot beat it.",
        "",
        "| outside the service | 1 process s | 2 processes s | ratio |",
        "|---|---:|---:|---:|",
        f"| chunks only | {statistics.median(ceiling.one_s):.1f} "
        f"| {statistics.median(ceiling.two_s):.1f} | {ceiling.chunk_ratio:.2f} |",
        f"| chunks + merge (the ceiling) "
        f"| {statistics.median(ceiling.one_s) + ceiling.merge_s:.1f} "
        f"| {statistics.median(ceiling.two_s) + ceiling.merge_s:.1f} | {ceiling.ratio:.2f} |",
        f"| the service's ratio (median runs) as a share of the ceiling | | "
        f"| {speedup / ceiling.ratio:.0%} |",
        "",
    ]
    loads = [r.load for res in results for r in res.runs]
    if max(loads) > 0.5:
        lines += [
            f"Other processes were running (load average up to {max(loads):.1f} at submit on "
            f"{os.cpu_count()} CPUs): two pool processes only get two cores when nobody else "
            "wants them, so the ratio reads low under load while CPU seconds do not.",
            "",
        ]
    lines += [
        "Chunked (2 processes) against the single pass, same file:",
        "",
        "| figure | single pass | chunked vs single pass |",
        "|---|---:|---|",
    ]
    for figure, value, diff in differences(single.runs[0].document, two.runs[0].document):
        lines.append(f"| {figure} | {value} | {diff} |")
    return "\n".join(lines) + "\n"


def shlex_join(argv: list[str]) -> str:
    import shlex

    cmd = shlex.join([".venv/bin/python", "scripts/bench_chunks.py", *argv])
    return f"make bench → {cmd}" if "MAKELEVEL" in os.environ else cmd


# --- main --------------------------------------------------------------------------------


def long_file(minutes: int) -> Path:
    """The bench file of ``minutes``, built by scripts/bench.py's recipe when not cached."""
    # By path: the name `bench` is the scripts/bench/ package (the shared harness).
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)

    cached = CACHE / f"wesnoth-{minutes}min.ogg"
    if cached.exists():
        return cached
    tracks, _ = bench.wesnoth_tracks()
    return Path(bench.build_long_file(tracks, minutes))


def export_ref(ref: str) -> Path:
    """`git archive` the packages at ``ref`` into .bench/chunks-ref-<sha>."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not sha:
        raise BenchError(f"--ref {ref!r} is not a commit in {ROOT}")
    root = CACHE / f"chunks-ref-{sha}"
    if not (root / "earshot" / "__init__.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, *PACKAGES], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def main(argv: list[str] | None = None) -> int:
    global CODE
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"the {QUICK_MINUTES}-minute file, one run each"
    )
    parser.add_argument("--repeat", type=int, help="jobs per configuration (default 3, quick 1)")
    parser.add_argument(
        "--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone"
    )
    parser.add_argument("--ref", metavar="REV", help="run the code as committed at REV")
    # make bench passes the same BENCH_ARGS to every script; options meant for the others
    # (--files, --ref, --cpu, ...) are accepted and ignored here.
    args, _ = parser.parse_known_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.ref:
        CODE = export_ref(args.ref)
    sys.path.insert(0, str(CODE))
    started = datetime.datetime.now(datetime.UTC)
    path = long_file(QUICK_MINUTES if args.quick else MINUTES)

    import soundfile as sf

    duration_s = float(sf.info(str(path)).duration)
    log(f"chunked analysis: {path.name} ({duration_s / 60:.0f} min), {repeat} run(s) each")
    results = [measure(config, path, repeat) for config in CONFIGS]
    log(f"  the same chunks outside the service, 1 and 2 processes, {repeat} run(s) each …")
    ceiling = machine_ceiling(path, repeat)
    log(f"    ceiling {ceiling.ratio:.2f} (chunks only {ceiling.chunk_ratio:.2f})")
    section = render(
        argv=argv,
        started=started,
        path=path,
        duration_s=duration_s,
        results=results,
        ceiling=ceiling,
    )
    print(section)
    CACHE.mkdir(exist_ok=True)
    (CACHE / "chunks.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": shlex_join(argv),
                "results": {
                    res.config.name: {
                        "wall_s": res.wall_s,
                        "best_s": res.best_s,
                        "cpu_s": res.cpu_s,
                        "loads": [r.load for r in res.runs],
                    }
                    for res in results
                },
                "ceiling": {
                    "chunks": ceiling.chunks,
                    "one_process_s": ceiling.one_s,
                    "two_processes_s": ceiling.two_s,
                    "merge_s": ceiling.merge_s,
                    "ratio": ceiling.ratio,
                },
            },
            indent=1,
        )
    )
    if not args.no_write:
        write_section(DOC, "bench_chunks.py", section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    # A clean exit, so the finally blocks stop the worker and remove its temporary folder.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        sys.exit(main())
    except (BenchError, HarnessError) as exc:
        log(f"bench_chunks: {exc}")
        sys.exit(1)
