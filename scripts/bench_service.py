"""`make bench` (service part): jobs per second through API + broker + workers, and cold start.

Issue #6 asks what the service adds on top of the analysis: many short (5 s) clips go through
`earshot serve` and `earshot worker` on this machine, and in the same run the same clips go
through `analyze_file` alone in as many processes as the service has workers. The difference,
per job, is what the HTTP upload, job store, broker and task machinery cost:

    overhead per job = service wall * worker processes / jobs - analysis wall per clip

Both deployments are measured: scaled-out (a fresh RabbitMQ vhost and PostgreSQL database,
dropped afterwards; local blobs) and embedded (`filesystem://` broker, SQLite). Then cold start:
a freshly started worker's first job against its tenth, with an empty NUMBA_CACHE_DIR and with
the cache the first start left behind.

Every process gets one thread per pool (OMP_NUM_THREADS etc. = 1), as a deployment with one
worker process per core should. The result is printed and written into docs/benchmarks.md
between its own markers, above the section scripts/bench.py regenerates.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import multiprocessing
import os
import shutil
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
    THREAD_VARS,
    Child,
    HarnessError,
    WaitTimeout,
    child_env,
    free_port,
    group_cpu_s,
    postgres_database,
    rabbitmq_vhost,
    run_earshot,
    wait_for,
    write_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
# scripts/bench.py rewrites everything below its own mark; this section sits above it, between
# these two, so either script can run without erasing the other's figures.

CACHE = ROOT / ".bench"
# What --ref exports: every package a service process imports.
PACKAGES = ("analysis", "tasks", "api", "earshot")

CLIP_S = 5.0
CLIP_SR = 44100
JOBS = 200
QUICK_JOBS = 50
# Processes that analyse, in the service (one pool) and in the analysis-alone run alike.
WORKERS = 2
HTTP_CLIENTS = 4
# Re-submissions of already analysed clips: they end at the API (result reused, nothing queued).
CACHED_JOBS = 50
COLD_RUNS = 10
# Bounds on waits so a broken service fails the run instead of hanging it; not speed targets.
START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 600.0
POLL_S = 0.05


class BenchError(Exception):
    """Raised when the service benchmark cannot run: a server is absent or a process died."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- clips -------------------------------------------------------------------------------


def make_clips(folder: Path, n: int, *, first: int = 0) -> list[Path]:
    """n distinct 5-second mono WAV clips: a triad, a click track and noise, all seeded by index.

    Distinct bytes matter: the API answers a file it has analysed before from its cache.
    """
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(CLIP_S * CLIP_SR)) / CLIP_SR
    paths = []
    for i in range(first, first + n):
        rng = np.random.default_rng(i)
        root = 110.0 * 2 ** ((i % 24) / 12)
        bpm = 80 + (i * 7) % 90
        y = 0.15 * np.sin(2 * np.pi * np.outer(t, root * np.array([1.0, 1.26, 1.5]))).sum(axis=1)
        y[:: int(CLIP_SR * 60 / bpm)] += 0.6
        y += 0.02 * rng.standard_normal(len(t))
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, np.clip(y, -1, 1).astype(np.float32), CLIP_SR, subtype="PCM_16")
        paths.append(path)
    return paths


# --- analysis alone ----------------------------------------------------------------------


def _warm_process() -> None:
    import fcntl

    from analysis.warmup import warmup

    # Processes JIT-compiling into one cold NUMBA_CACHE_DIR at once crash (SIGSEGV); they take
    # turns, as `earshot worker` does, and the later ones load what the first one cached.
    cache = Path(os.environ["NUMBA_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".earshot-warmup.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        warmup()


def _analyze_one(path: str) -> tuple[float, float]:
    from analysis import analyze_file

    wall0, cpu0 = time.perf_counter(), time.process_time()
    analyze_file(path, profile="standard")
    return time.perf_counter() - wall0, time.process_time() - cpu0


@dataclass
class Alone:
    wall_s: float
    per_clip_wall: list[float]
    per_clip_cpu: list[float]


def analysis_alone(clips: list[Path]) -> Alone:
    """`analyze_file` on every clip in WORKERS warmed-up processes, like the worker pool."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=context, initializer=_warm_process
    ) as pool:
        # Start and warm every process before the clock starts, as the worker does at start.
        list(pool.map(time.sleep, [0.5] * WORKERS))
        started = time.perf_counter()
        results = list(pool.map(_analyze_one, map(str, clips)))
        wall = time.perf_counter() - started
    return Alone(wall, [r[0] for r in results], [r[1] for r in results])


# --- code --------------------------------------------------------------------------------


def export_ref(ref: str) -> tuple[Path, str]:
    """`git archive` the service's packages at `ref` into .bench/; returns (root, short sha)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not sha:
        raise BenchError(f"--ref {ref!r} is not a commit in {ROOT}")
    root = CACHE / f"service-ref-{sha}"
    if not all((root / p / "__init__.py").exists() for p in PACKAGES):
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, *PACKAGES], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root, sha


# --- servers -----------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds every process on this machine has used (all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def task_runtimes(log_text: str) -> dict[str, list[float]]:
    """Celery's own run time of each task, by task name, from a worker's JSON log lines."""
    runtimes: dict[str, list[float]] = {}
    for line in log_text.splitlines():
        if '"runtime"' not in line:
            continue
        with contextlib.suppress(ValueError):
            data = json.loads(line).get("data") or {}
            if "runtime" in data and "name" in data:
                runtimes.setdefault(data["name"], []).append(float(data["runtime"]))
    return runtimes


def service_env(data_dir: Path, numba_cache: Path, **settings: str) -> dict[str, str]:
    # PYTHONPATH (set by main to the code measured) comes with os.environ.
    return child_env(data_dir, numba_cache, single_thread=True, log_format="json", **settings)


@dataclass
class Stack:
    """A running API (and its job store, read directly to follow jobs without HTTP polling)."""

    url: str
    env: dict[str, str]
    workdir: Path
    processes: list[Child] = field(default_factory=list)
    store: Any = None

    def start(self, args: list[str], name: str) -> Child:
        process = Child(args, env=self.env, log_path=self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()


@contextlib.contextmanager
def running_api(env: dict[str, str], workdir: Path) -> Iterator[Stack]:
    import httpx

    from core.jobs import JobStore
    from core.settings import Settings

    run_earshot(["migrate"], env=env)
    port = free_port()
    stack = Stack(url=f"http://127.0.0.1:{port}", env=env, workdir=workdir)
    settings = Settings(
        data_dir=Path(env["EARSHOT_DATA_DIR"]), database_url=env.get("EARSHOT_DATABASE_URL")
    )
    stack.store = JobStore(settings.effective_database_url)
    api = stack.start(["serve", "--port", str(port)], "api")

    def api_ready() -> bool:
        api.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            # /healthz: /readyz waits for warm workers too, and none is started yet.
            return httpx.get(f"{stack.url}/healthz", timeout=2).status_code == 200
        return False

    try:
        try:
            wait_for(api_ready, what="the API's /healthz", timeout=START_TIMEOUT_S, poll=POLL_S)
        except WaitTimeout as exc:
            raise BenchError(f"{exc}:\n{api.log()[-3000:]}") from None
        yield stack
    finally:
        for process in reversed(stack.processes):
            process.stop()
        stack.store.dispose()


# --- submitting and following jobs -------------------------------------------------------


@dataclass
class Submitted:
    job_id: str
    sent_at: float  # time.time() just before the request
    answered_at: float
    status: str


def submit(client: Any, url: str, path: Path, *, priority: str = "batch") -> Submitted:
    sent = time.time()
    with open(path, "rb") as f:
        response = client.post(
            f"{url}/v1/analyses",
            files={"file": (path.name, f, "audio/wav")},
            data={"priority": priority},
        )
    answered = time.time()
    if response.status_code not in (200, 202):
        raise BenchError(f"upload of {path.name} answered {response.status_code}: {response.text}")
    body = response.json()
    return Submitted(body["id"], sent, answered, body["status"])


def submit_all(url: str, clips: list[Path]) -> list[Submitted]:
    """Every clip through a small pool of HTTP clients, one connection each."""
    import httpx

    def send(chunk: list[Path]) -> list[Submitted]:
        with httpx.Client(timeout=60) as client:
            return [submit(client, url, p) for p in chunk]

    chunks = [clips[i::HTTP_CLIENTS] for i in range(HTTP_CLIENTS)]
    with concurrent.futures.ThreadPoolExecutor(HTTP_CLIENTS) as pool:
        return [s for part in pool.map(send, chunks) for s in part]


def wait_finished(stack: Stack, ids: list[str]) -> dict[str, Any]:
    """Rows of every job once all are finished; raises when one failed or a process died."""
    from sqlalchemy import func, select

    from core.jobs import JobRow

    wanted = set(ids)
    finished = JobRow.status.in_(("succeeded", "failed", "canceled"))
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        stack.check_alive()
        with stack.store.session() as session:
            # Only the count while waiting: this process shares the CPUs with the service.
            count = session.scalar(
                select(func.count()).select_from(JobRow).where(finished, JobRow.id.in_(wanted))
            )
            if count == len(wanted):
                rows = session.scalars(select(JobRow).where(JobRow.id.in_(wanted))).all()
                done = {r.id: r for r in rows}
                failed = [r for r in done.values() if r.status != "succeeded"]
                if failed:
                    r = failed[0]
                    raise BenchError(
                        f"{len(failed)} job(s) did not succeed, e.g. {r.id}: {r.status} "
                        f"{r.error_code} {r.error_message}"
                    )
                return {
                    r.id: {
                        "created": epoch(r.created_at),
                        "started": epoch(r.started_at),
                        "finished": epoch(r.finished_at),
                    }
                    for r in done.values()
                }
        if time.monotonic() > deadline:
            raise BenchError(f"{len(wanted) - count} jobs unfinished after {JOB_TIMEOUT_S} s")
        time.sleep(POLL_S)


def epoch(moment: datetime.datetime | None) -> float:
    """Seconds since the epoch; SQLite hands back the stored UTC times without a zone."""
    if moment is None:
        return float("nan")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Throughput:
    mode: str
    jobs: int
    wall_s: float
    latency_s: list[float]
    upload_s: list[float]
    queue_s: list[float]
    run_s: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)
    task_s: dict[str, list[float]] = field(default_factory=dict)
    cached_jobs: int = 0
    cached_wall_s: float = 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s


def throughput(mode: str, stack: Stack, clips: list[Path]) -> Throughput:
    worker = stack.start(
        [
            "worker",
            "--queues=earshot.batch,earshot.render",
            f"--concurrency={WORKERS}",
        ],
        "worker-" + "".join(c if c.isalnum() else "-" for c in mode),
    )
    worker.wait_worker_ready(timeout=START_TIMEOUT_S, poll=POLL_S)
    log(f"  {mode}: submitting {len(clips)} clips …")
    groups = {"api": stack.processes[0].pid, "worker": worker.pid}
    cpu_before = {name: group_cpu_s(pgid) for name, pgid in groups.items()}
    own_before = time.process_time()
    machine_before = machine_busy_s()
    started = time.time()
    submitted = submit_all(stack.url, clips)
    rows = wait_finished(stack, [s.job_id for s in submitted])
    wall = max(r["finished"] for r in rows.values()) - started
    cpu = {name: group_cpu_s(pgid) - cpu_before[name] for name, pgid in groups.items()}
    cpu["bench client"] = time.process_time() - own_before
    # RabbitMQ, PostgreSQL and whatever else (neighbours included) ran meanwhile.
    cpu["rest of machine"] = machine_busy_s() - machine_before - sum(cpu.values())
    by_id = {s.job_id: s for s in submitted}
    result = Throughput(
        mode=mode,
        jobs=len(clips),
        wall_s=wall,
        latency_s=[rows[i]["finished"] - s.sent_at for i, s in by_id.items()],
        upload_s=[s.answered_at - s.sent_at for s in submitted],
        queue_s=[rows[i]["started"] - rows[i]["created"] for i in by_id],
        run_s=[rows[i]["finished"] - rows[i]["started"] for i in by_id],
        cpu_s=cpu,
        task_s=task_runtimes(worker.log()),
    )
    # The same clips again: each answer is a finished job reusing the stored result.
    again = clips[: min(CACHED_JOBS, len(clips))]
    t0 = time.perf_counter()
    resubmitted = submit_all(stack.url, again)
    result.cached_wall_s = time.perf_counter() - t0
    result.cached_jobs = len(again)
    if any(s.status != "succeeded" for s in resubmitted):
        raise BenchError("a re-submitted clip was queued again instead of reusing its result")
    worker.stop()
    stack.processes.remove(worker)
    return result


@dataclass
class ColdStart:
    cache: str
    ready_s: float
    latency_s: list[float]
    render_s: list[float]


def cold_start(stack: Stack, clips: list[Path], numba_cache: Path, label: str) -> ColdStart:
    """A fresh one-process worker on the interactive and render queues, then COLD_RUNS
    interactive jobs one after another, each waited for with its plots (interactive jobs are
    drawn at once; so a render never delays the next job)."""
    import httpx

    from core.names import RENDER_TASK

    env = {**stack.env, "NUMBA_CACHE_DIR": str(numba_cache)}
    worker = Child(
        ["worker", "--queues=earshot.interactive,earshot.render", "--concurrency=1"],
        env=env,
        log_path=stack.workdir / f"worker-cold-{label.split()[0]}.log",
    )
    stack.processes.append(worker)
    ready = worker.wait_worker_ready(timeout=START_TIMEOUT_S, poll=POLL_S)
    latencies = []
    with httpx.Client(timeout=60) as client:
        for done, path in enumerate(clips, 1):
            sent = submit(client, stack.url, path, priority="interactive")
            row = wait_finished(stack, [sent.job_id])[sent.job_id]
            latencies.append(row["finished"] - sent.sent_at)
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while len(task_runtimes(worker.log()).get(RENDER_TASK, [])) < done:
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"render {done} unfinished after {JOB_TIMEOUT_S} s")
                time.sleep(POLL_S)
    renders = task_runtimes(worker.log())[RENDER_TASK]
    worker.stop()
    stack.processes.remove(worker)
    return ColdStart(label, ready, latencies, renders)


# --- report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def render(
    *,
    argv: list[str],
    ref_sha: str | None,
    started: datetime.datetime,
    elapsed_s: float,
    load_at_start: float,
    alone: Alone,
    runs: list[Throughput],
    cold: list[ColdStart],
) -> str:
    if ref_sha:
        code = f"`{ref_sha}` (packages exported with git archive)"
    else:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *PACKAGES],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        code = f"`{head or 'unknown'}`" + (
            " with uncommitted changes (working tree)" if dirty else ""
        )
    from core.names import ANALYZE_TASK

    per_clip = statistics.fmean(alone.per_clip_wall)
    n = len(alone.per_clip_wall)
    lines = [
        "## Service throughput and cold start (issue #6)",
        "",
        f"Run of {started:%Y-%m-%d %H:%M} UTC, earshot at {code}"
        f", `{' '.join(['scripts/bench_service.py', *argv])}`, {os.cpu_count()} CPUs, "
        f"load average {load_at_start:.2f} at start, {elapsed_s / 60:.1f} min in all.",
        "",
        f"{n} distinct {CLIP_S:.0f}-second mono 44.1 kHz WAV clips (a triad, a click track and "
        f"seeded noise each), uploaded by {HTTP_CLIENTS} HTTP clients at batch priority to "
        f"`earshot serve` and analysed by one `earshot worker --concurrency {WORKERS}` pool "
        "consuming the batch and render queues (batch jobs draw their plots only when a plot is "
        "first asked for, so no render runs here; the cold-start table below shows what drawing "
        "costs for an interactive job). Wall time runs from the first upload to the last job "
        "marked succeeded. Analysis alone: `analyze_file` on the same clips in "
        f"{WORKERS} warmed-up processes. Overhead per job = service wall \u00d7 {WORKERS} / "
        "jobs \u2212 analysis wall per clip.",
        "",
        "| | jobs | wall s | jobs/s | overhead per job ms | latency p50 / p95 s "
        "| upload p50 ms | queue wait p50 s | in worker p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| analysis alone ({WORKERS} processes) | {n} | {alone.wall_s:.2f} "
        f"| {n / alone.wall_s:.1f} | — | — | — | — "
        f"| {ms(statistics.median(alone.per_clip_wall))} |",
    ]
    for run in runs:
        overhead = run.wall_s * WORKERS / run.jobs - per_clip
        lines.append(
            f"| {run.mode} | {run.jobs} | {run.wall_s:.2f} | {run.jobs_per_s:.1f} "
            f"| {ms(overhead)} | {statistics.median(run.latency_s):.2f} / "
            f"{percentile(run.latency_s, 0.95):.2f} | {ms(statistics.median(run.upload_s))} "
            f"| {statistics.median(run.queue_s):.2f} | {ms(statistics.median(run.run_s))} |"
        )
    lines += [
        "",
        "Where a job's time goes, per job: Celery's run time of the analyze task (analysis, "
        "row updates, result files), and the CPU time each process group used during the "
        "run (*worker* includes the tasks and Celery itself; *bench client* is this script's "
        "HTTP uploads and job-store polling; *rest of machine* is RabbitMQ, PostgreSQL and "
        "anything else that ran, other users' work included).",
        "",
        "| | analyze task ms | API CPU ms "
        "| worker CPU ms | bench client CPU ms | rest of machine CPU ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        analyze = statistics.fmean(run.task_s.get(ANALYZE_TASK, [float("nan")]))
        cpu = {k: v / run.jobs for k, v in run.cpu_s.items()}
        lines.append(
            f"| {run.mode} | {ms(analyze)} "
            f"| {ms(cpu['api'])} | {ms(cpu['worker'])} | {ms(cpu['bench client'])} "
            f"| {ms(cpu['rest of machine'])} |"
        )
    lines += [
        "",
        f"Analysis per clip: {ms(per_clip)} ms wall, {ms(statistics.fmean(alone.per_clip_cpu))}"
        " ms CPU (mean). Latency is from the upload's start to the job marked succeeded; with "
        "every clip sent at once it is mostly queue wait. *In worker* is the job's "
        "`started_at` → `finished_at` (the analysis, result files and row updates).",
        "",
        "Already analysed clips sent again end at the API (the stored result is reused, "
        "nothing queued):",
        "",
        "| | uploads | wall s | uploads/s |",
        "|---|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.mode} | {run.cached_jobs} | {run.cached_wall_s:.2f} "
            f"| {run.cached_jobs / run.cached_wall_s:.1f} |"
        )
    lines += [
        "",
        f"Cold start (scaled-out stack): a fresh `earshot worker --concurrency 1` on the "
        f"interactive and render queues, then {COLD_RUNS} new interactive clips one after "
        "another, each uploaded once the previous one succeeded and its plots were drawn. "
        "*Ready* is process start to the pool's `worker pool … ready.` log line (imports and "
        "the warm-up analysis are paid there, before the pool forks); latency is upload start "
        "to succeeded.",
        "",
        f"| NUMBA_CACHE_DIR | ready s | job latency ms: 1st | {COLD_RUNS}th "
        f"| median of 2nd to {COLD_RUNS}th | render task ms: 1st | {COLD_RUNS}th "
        f"| median of 2nd to {COLD_RUNS}th |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cold:
        lines.append(
            f"| {c.cache} | {c.ready_s:.1f} | {ms(c.latency_s[0])} | {ms(c.latency_s[-1])} "
            f"| {ms(statistics.median(c.latency_s[1:]))} | {ms(c.render_s[0])} "
            f"| {ms(c.render_s[-1])} | {ms(statistics.median(c.render_s[1:]))} |"
        )
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_JOBS} jobs, not {JOBS}")
    parser.add_argument("--jobs", type=int, help="number of clips per mode")
    parser.add_argument(
        "--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone"
    )
    parser.add_argument(
        "--ref",
        metavar="REV",
        help="measure the packages as committed at REV, not the working tree",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy every process's log to .bench/service-logs/"
    )
    parser.add_argument("--profile", type=int, default=0, help=argparse.SUPPRESS)
    # `make bench BENCH_ARGS=…` passes scripts/bench.py's options here too; they do not apply.
    args, ignored = parser.parse_known_args(argv)
    if args.profile:
        return 0  # scripts/bench.py --profile only profiles one analysis
    if ignored:
        log(f"bench_service: ignoring {' '.join(ignored)} (options of scripts/bench.py)")
    argv = [a for a in argv if a not in ignored]
    n = args.jobs or (QUICK_JOBS if args.quick else JOBS)
    code_root, ref_sha = export_ref(args.ref) if args.ref else (ROOT, None)
    # PYTHONPATH first: it beats the editable install's finder, for this process (which reads
    # the job store with core.jobs) and for every child.
    sys.path.insert(0, str(code_root))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(code_root), os.environ.get("PYTHONPATH")])
    )

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    # Children (the analysis-alone pool and every earshot process) inherit these.
    os.environ.update(dict.fromkeys(THREAD_VARS, "1"))
    with tempfile.TemporaryDirectory(prefix="earshot-bench-service-") as tmp_name:
        tmp = Path(tmp_name)
        numba_cache = tmp / "numba-cache"
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache)
        clips = make_clips(tmp / "clips", n)
        cold_clips = make_clips(tmp / "clips", 2 * COLD_RUNS, first=n)

        log(f"analysis alone: {n} clips in {WORKERS} processes …")
        alone = analysis_alone(clips)

        runs = []
        cold = []
        with rabbitmq_vhost() as broker_url, postgres_database() as database_url:
            workdir = tmp / "scaled"
            workdir.mkdir()
            env = service_env(
                workdir,
                numba_cache,
                broker_url=broker_url,
                database_url=database_url,
                blob_url=(workdir / "blobs").as_uri(),
            )
            with running_api(env, workdir) as stack:
                log("scaled-out (RabbitMQ + PostgreSQL) …")
                runs.append(throughput("RabbitMQ + PostgreSQL", stack, clips))
                log("cold start …")
                empty = tmp / "numba-cache-cold"
                cold.append(cold_start(stack, cold_clips[:COLD_RUNS], empty, "empty"))
                cold.append(cold_start(stack, cold_clips[COLD_RUNS:], empty, "warm (2nd start)"))

        workdir = tmp / "embedded"
        workdir.mkdir()
        with running_api(service_env(workdir, numba_cache), workdir) as stack:
            log("embedded (filesystem:// + SQLite) …")
            runs.append(throughput("embedded: filesystem:// + SQLite", stack, clips))

        if args.keep_logs:
            kept = CACHE / "service-logs"
            shutil.rmtree(kept, ignore_errors=True)
            kept.mkdir(parents=True)
            for path in tmp.rglob("*.log"):
                shutil.copy(path, kept / f"{path.parent.name}-{path.name}")
            log(f"logs in {kept.relative_to(ROOT)}")

    section = render(
        argv=argv,
        ref_sha=ref_sha,
        started=started,
        elapsed_s=time.perf_counter() - t0,
        load_at_start=load_at_start,
        alone=alone,
        runs=runs,
        cold=cold,
    )
    print(section)
    if not args.no_write:
        write_section(DOC, "bench_service.py", section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, HarnessError) as exc:
        log(f"bench_service: {exc}")
        sys.exit(1)
