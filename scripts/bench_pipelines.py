"""`make bench` (pipelines part): earshot against the seed tutorial's design, side by side.

Issue 15: on short real files the whole earshot stack must be at least twice as fast as what
it replaces. Both pipelines run in this one script, on the same machine, on the same real
compressed clips: 5- and 30-second OGG Vorbis cuts of the wesnoth tracks at several offsets
(44.1/48 kHz stereo, as the tracks are; cached under .bench/clips/, never committed).

- **seed**: scripts/bench/seed.py, the tutorial's FastAPI app + Celery prefork worker
  (``-c 2``) on RabbitMQ with the ``rpc://`` result backend and the tutorial librosa analysis.
- **earshot, embedded**: ``earshot dev`` as `make run` starts it (filesystem://, SQLite, local
  blobs; its interactive pool takes batch jobs too, beside a batch pool on the other core).
- **earshot, RabbitMQ + PostgreSQL**: ``earshot serve`` and one ``earshot worker
  --concurrency 2`` on the interactive and batch queues (two processes, as the seed's).

Each pipeline gets the clips from one sequential uploader (upload, follow the job until its
result is there, next) and from four parallel ones. All three stacks are up at once and each
set of clips runs on them back to back, so the two sides of a ratio are seconds apart. The
seed's client polls its task every 20 ms (the tutorial offers nothing else); earshot's asks for
the job with ``?wait=…&until=finished``, which the server holds until the job has ended, as
earshot's own client does when only the outcome is wanted (``Client.analyze``, ``Client.wait``
without ``on_change``; `earshot submit` also records each job's start, so it asks once per
status change). All
clips go at batch priority (no plots are drawn,
as the seed draws none). jobs/s = clips / (first upload to last result). Beside it: the load
average when the run started (the machine is shared), the analysis alone warm in-process
(one pinned process per pipeline: scripts/bench/measure.py) and, from the worker's own log,
Celery's run time of earshot's analyze task. The section is written into docs/benchmarks.md
between its own markers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from scripts.bench.harness import (  # noqa: E402 - needs ROOT on sys.path
    THREAD_VARS,
    Child,
    HarnessError,
    child_env,
    free_port,
    postgres_database,
    rabbitmq_vhost,
    run_earshot,
    wait_for,
    write_section,
)

DOC = ROOT / "docs" / "benchmarks.md"
CACHE = ROOT / ".bench"
MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
SEED = ROOT / "scripts" / "bench" / "seed.py"
MEASURE = ROOT / "scripts" / "bench" / "measure.py"

# Clips per run, by clip length in seconds; --quick uses fewer. Enough for a run to last
# seconds: with 40 clips a 5-s run at 40 jobs/s took 1 s, and two runs three minutes apart
# gave 1.76x and 2.33x the seed (2026-12-04).
CLIPS = {5: 100, 30: 24}
QUICK_CLIPS = {5: 12, 30: 4}
# Rounds of every (clip length, uploaders) set through every stack, in turn; each round has
# its own clips. A ratio is the median of its rounds': one 100-clip run of the scaled-out
# stack read 1.89x, 2.55x and 1.96x the seed in three `make bench` runs (2026-12-04).
ROUNDS = 3
QUICK_ROUNDS = 1
UPLOADERS = (1, 4)
POLL_S = 0.02
# Seconds earshot's status requests ask the server to hold them (`GET …?wait=`).
HOLD_S = 10.0
WORKERS = 2
START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 120.0
# Clips analysed first on every fresh stack, by WORKERS uploaders so that each pool process
# gets some, and not counted (lazy imports and first-call costs of each process).
WARMUP_CLIPS = 6
# The batch flood on `earshot dev`: 30-second clips at batch priority, then interactive ones.
FLOOD_BATCH = 24
FLOOD_INTERACTIVE = 3
# Clips of each length the in-process figure analyses.
IN_PROCESS_CLIPS = 6


class BenchError(Exception):
    """Raised when the benchmark cannot run: a server is absent or a process died."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- clips -------------------------------------------------------------------------------


def make_clips(seconds: int, n: int) -> list[Path]:
    """``n`` distinct ``seconds``-long OGG Vorbis cuts of the wesnoth tracks (cached)."""
    import soundfile as sf

    folder = CACHE / "clips" / f"{seconds}s"
    wanted = [folder / f"clip{i:03d}.ogg" for i in range(n)]
    if all(p.exists() for p in wanted):
        return wanted
    tracks = sorted(MUSIC.glob("*.ogg"))
    if not tracks:
        raise BenchError(f"no wesnoth tracks under {MUSIC}: apt-get install wesnoth-1.16-music")
    folder.mkdir(parents=True, exist_ok=True)
    log(f"cutting {n} {seconds}-second clips into {folder.relative_to(ROOT)} …")
    i = 0
    offset = 15.0
    # Consecutive cuts of a track lie a few seconds apart, so that the tracks (41, mostly
    # 2-5 min) hold the ~600 distinct clips of a run's three rounds.
    spacing = seconds + 2.0
    while i < n:
        for track in tracks:
            if i >= n:
                break
            info = sf.info(str(track))
            if info.duration < offset + seconds:
                continue
            if wanted[i].exists():  # cut by an earlier, shorter call
                i += 1
                continue
            y, sr = sf.read(
                str(track),
                start=int(offset * info.samplerate),
                frames=int(seconds * info.samplerate),
                dtype="float32",
            )
            partial = wanted[i].with_suffix(".part.ogg")
            sf.write(str(partial), y, sr, format="OGG", subtype="VORBIS")
            partial.replace(wanted[i])
            i += 1
        offset += spacing
        if offset > 600:
            raise BenchError("the wesnoth tracks are too short for that many clips")
    return wanted


# --- pipelines ---------------------------------------------------------------------------


@dataclass
class Stack:
    """A running pipeline: how to submit a clip and how to tell its result is there."""

    name: str
    url: str
    submit: Callable[[Any, Path], str]
    finished: Callable[[Any, str], bool]
    processes: list[Child] = field(default_factory=list)
    # Whether ``finished`` asks the server to hold its answer until the status changes (as
    # earshot's client does, ``GET …?wait=``); otherwise the client polls every POLL_S.
    holds: bool = False

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()


def earshot_submit(client: Any, url: str, path: Path, priority: str = "batch") -> str:
    with path.open("rb") as f:
        answer = client.post(
            f"{url}/v1/analyses",
            files={"file": (path.name, f, "audio/ogg")},
            data={"priority": priority},
        )
    if answer.status_code not in (200, 202):
        raise BenchError(f"earshot upload answered {answer.status_code}: {answer.text}")
    return str(answer.json()["id"])


def earshot_job(client: Any, url: str, job_id: str) -> dict[str, Any]:
    """The job once it has ended, or as it is when the server stops holding the request.

    As earshot's own client follows a job whose outcome alone it wants (Client.wait without
    on_change): the answer is held until the job has ended, so the client neither sleeps nor
    asks again in between. A failed or canceled job is a BenchError.
    """
    job: dict[str, Any] = client.get(
        f"{url}/v1/analyses/{job_id}?wait={HOLD_S:g}&until=finished"
    ).json()
    if job["status"] in ("failed", "canceled"):
        raise BenchError(f"earshot job {job_id} {job['status']}: {job.get('error')}")
    return job


def earshot_finished(client: Any, url: str, job_id: str) -> bool:
    return bool(earshot_job(client, url, job_id)["status"] == "succeeded")


def _wait_http(url: str, processes: list[Child], what: str) -> None:
    import httpx

    def probe() -> bool:
        for process in processes:
            process.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=5).status_code == 200
        return False

    wait_for(probe, what=what, timeout=START_TIMEOUT_S, poll=0.2)


def _stop(processes: list[Child]) -> None:
    for process in reversed(processes):
        process.stop()


def warm_seed_cache(env: dict[str, str]) -> None:
    """Compile the tutorial's numba code into the seed's NUMBA_CACHE_DIR in one process.

    Two pool processes compiling into one cold cache at once corrupt it: every later process
    that loads it crashes (SIGSEGV in librosa's beat tracker). The cache is the bench's own, so
    a crashed warm-up wipes it and compiles again.
    """
    cache = Path(env["NUMBA_CACHE_DIR"])
    code = (
        "from scripts.bench.measure import tutorial_pipeline; "
        f"tutorial_pipeline()({str(ROOT / 'samples' / 'click120_cmajor.ogg')!r})"
    )
    for _attempt in (1, 2):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, check=False
        )
        if done.returncode == 0:
            return
        log(f"seed: numba warm-up failed ({done.returncode}); wiping {cache}")
        shutil.rmtree(cache, ignore_errors=True)
    raise BenchError(f"the seed's analysis fails in one process:\n{done.stderr.decode()}")


@contextlib.contextmanager
def seed_stack(workdir: Path) -> Iterator[Stack]:
    with rabbitmq_vhost() as broker:
        env = {
            **os.environ,
            "SEED_BROKER_URL": broker,
            "SEED_UPLOADS": str(workdir / "uploads"),
            # The seed's own compiled code, kept between runs and filled by one process.
            "NUMBA_CACHE_DIR": str(CACHE / "seed-numba-cache"),
            **dict.fromkeys(THREAD_VARS, "1"),
        }
        warm_seed_cache(env)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes: list[Child] = []

        def start(args: list[str], name: str) -> Child:
            child = Child(
                args,
                env=env,
                log_path=workdir / f"{name}.log",
                cwd=ROOT,
                program=[sys.executable, str(SEED)],
            )
            processes.append(child)
            return child

        try:
            worker = start(["worker", f"--concurrency={WORKERS}"], "seed-worker")
            start(["api", "--port", str(port)], "seed-api")
            worker.wait_log(" ready.", what="the seed worker", timeout=START_TIMEOUT_S)
            _wait_http(f"{url}/docs", processes, "the seed API")

            def submit(client: Any, path: Path) -> str:
                with path.open("rb") as f:
                    answer = client.post(
                        f"{url}/analyze", files={"file": (path.name, f, "audio/ogg")}
                    )
                answer.raise_for_status()
                return str(answer.json()["task_id"])

            def finished(client: Any, task_id: str) -> bool:
                answer = client.get(f"{url}/tasks/{task_id}")
                if answer.status_code != 200:
                    # The tutorial's rpc:// backend fails under load now and then; say so.
                    raise BenchError(f"seed /tasks answered {answer.status_code}: {answer.text}")
                state = answer.json()["state"]
                if state == "FAILURE":
                    raise BenchError(f"seed task {task_id} failed")
                return bool(state == "SUCCESS")

            yield Stack("seed tutorial (RabbitMQ + rpc://, -c 2)", url, submit, finished, processes)
        finally:
            _stop(processes)


def earshot_env(workdir: Path, **settings: str) -> dict[str, str]:
    from earshot.service_cmd import INSTALL_NUMBA_CACHE

    # The numba cache `make install` filled, as a user's `make run` finds it.
    cache = Path(os.environ.get("NUMBA_CACHE_DIR") or INSTALL_NUMBA_CACHE)
    # Native thread pools as `earshot` sets them itself (one thread per process unless told
    # otherwise), not forced here: the bench runs what a user's `make run` runs.
    env = child_env(workdir / "var", cache, code=ROOT, **settings)
    env["EARSHOT_LOG_FORMAT"] = "json"
    return env


@contextlib.contextmanager
def earshot_dev_stack(workdir: Path) -> Iterator[Stack]:
    env = earshot_env(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = Child(["dev", "--port", str(port)], env=env, log_path=workdir / "dev.log")
    processes = [dev]
    try:
        _wait_http(f"{url}/readyz", processes, "earshot dev's /readyz")
        yield Stack(
            "earshot dev (embedded)",
            url,
            lambda client, path: earshot_submit(client, url, path),
            lambda client, job: earshot_finished(client, url, job),
            processes,
            holds=True,
        )
    finally:
        _stop(processes)


@contextlib.contextmanager
def earshot_scaled_stack(workdir: Path) -> Iterator[Stack]:
    with rabbitmq_vhost() as broker, postgres_database() as database:
        env = earshot_env(
            workdir,
            broker_url=broker,
            database_url=database,
            blob_url=(workdir / "blobs").as_uri(),
        )
        run_earshot(["migrate"], env=env)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        worker = Child(
            [
                "worker",
                "--queues=earshot.interactive,earshot.batch",
                f"--concurrency={WORKERS}",
            ],
            env=env,
            log_path=workdir / "worker.log",
        )
        api = Child(["serve", "--port", str(port)], env=env, log_path=workdir / "api.log")
        processes = [worker, api]
        try:
            worker.wait_worker_ready(timeout=START_TIMEOUT_S)
            _wait_http(f"{url}/healthz", processes, "earshot serve")
            yield Stack(
                f"earshot, RabbitMQ + PostgreSQL (worker -c {WORKERS})",
                url,
                lambda client, path: earshot_submit(client, url, path),
                lambda client, job: earshot_finished(client, url, job),
                processes,
                holds=True,
            )
        finally:
            _stop(processes)


# --- runs --------------------------------------------------------------------------------


@dataclass
class Run:
    pipeline: str
    clip_s: int
    uploaders: int
    round: int
    jobs: int
    wall_s: float
    load: float
    latency_s: list[float]
    handles: list[str]

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s


def drive(stack: Stack, clips: list[Path], uploaders: int) -> tuple[float, list[float], list[str]]:
    """Every clip through ``uploaders`` clients, each uploading its next clip once the last
    one's result is there; (wall seconds, per-clip latencies, job or task ids)."""
    import httpx

    todo = list(clips)
    latencies: list[float] = []
    handles: list[str] = []

    def client_loop() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    path = todo.pop(0)
                except IndexError:
                    return
                sent = time.perf_counter()
                handle = stack.submit(client, path)
                handles.append(handle)
                deadline = sent + JOB_TIMEOUT_S
                while not stack.finished(client, handle):
                    if time.perf_counter() > deadline:
                        raise BenchError(f"{stack.name}: {path.name} unfinished")
                    if not stack.holds:
                        time.sleep(POLL_S)
                latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(uploaders) as pool:
        for future in [pool.submit(client_loop) for _ in range(uploaders)]:
            future.result()
    stack.check_alive()
    return time.perf_counter() - started, latencies, handles


def measure_stacks(
    stacks: dict[str, Stack],
    clip_sets: dict[tuple[int, int, int], list[Path]],
    warmup: list[Path],
) -> list[Run]:
    """Every clip set, keyed (clip length, uploaders, round), through every stack, the stacks
    of one set back to back.

    All stacks are up at once and each set runs on them one after the other, so the two sides
    of a ratio are seconds apart: one CPU of this host drifts by ±25 % over minutes, and with
    each stack measured whole in turn (seed, then dev, then scaled-out) the in-process cost
    of one clip read 23 ms in one run and 28 ms in the next. Rounds come one after another,
    each over every (clip length, uploaders).
    """
    for stack in stacks.values():
        drive(stack, warmup, WORKERS)
    runs = []
    for (seconds, uploaders, round_), clips in sorted(clip_sets.items(), key=lambda kv: kv[0][2]):
        for stack in stacks.values():
            load = os.getloadavg()[0]
            log(
                f"  round {round_ + 1}, {stack.name}: {len(clips)} x {seconds} s clips, "
                f"{uploaders} uploader(s) …"
            )
            wall, latencies, handles = drive(stack, clips, uploaders)
            runs.append(
                Run(
                    stack.name,
                    seconds,
                    uploaders,
                    round_,
                    len(clips),
                    wall,
                    load,
                    latencies,
                    handles,
                )
            )
    return runs


def ratios_to_seed(
    runs: list[Run] | list[dict[str, Any]],
) -> dict[tuple[int, int, str], list[float]]:
    """earshot ÷ seed jobs/s of each round, by (clip length, uploaders, pipeline).

    Each round's ratio is taken against the seed's run of the same round, seconds apart.
    ``runs`` are Runs or their dicts (``.bench/pipelines.json``).
    """
    rows = [r if isinstance(r, dict) else {**r.__dict__, "jobs_per_s": r.jobs_per_s} for r in runs]
    seed = {
        (r["clip_s"], r["uploaders"], r["round"]): r["jobs_per_s"]
        for r in rows
        if r["pipeline"].startswith("seed")
    }
    ratios: dict[tuple[int, int, str], list[float]] = {}
    for r in rows:
        base = seed.get((r["clip_s"], r["uploaders"], r["round"]))
        if base and not r["pipeline"].startswith("seed"):
            ratios.setdefault((r["clip_s"], r["uploaders"], r["pipeline"]), []).append(
                r["jobs_per_s"] / base
            )
    return ratios


TASK_LINE = re.compile(r"Task earshot\.analyze\[([0-9a-f]+)\] succeeded in ([0-9.]+)s")


@dataclass
class Flood:
    """A batch flood on `earshot dev` with interactive uploads in the middle of it."""

    batch_jobs: int
    wall_s: float
    processes: int  # distinct pool processes that analysed batch jobs
    cores: int
    batch_task_ms: list[float]
    interactive_wait_ms: list[float]  # created_at → started_at of each interactive job
    load: float

    @property
    def jobs_per_s(self) -> float:
        return self.batch_jobs / self.wall_s


def batch_flood(stack: Stack, batch: list[Path], interactive: list[Path], logs: Path) -> Flood:
    """Every ``batch`` clip uploaded at once at batch priority (nobody waits for results),
    then, while they run, the ``interactive`` clips one by one at interactive priority;
    returns when every job succeeded."""
    import httpx

    load = os.getloadavg()[0]
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:

        def finish(job_id: str) -> dict[str, Any]:
            deadline = time.perf_counter() + JOB_TIMEOUT_S
            while time.perf_counter() < deadline:
                job = earshot_job(client, stack.url, job_id)
                if job["status"] == "succeeded":
                    return job
            raise BenchError(f"job {job_id} unfinished")

        batch_ids = [earshot_submit(client, stack.url, path) for path in batch]
        waits = []
        for path in interactive:
            time.sleep(0.3)  # the batch is running: both processes are busy with it
            job = finish(earshot_submit(client, stack.url, path, "interactive"))
            created = datetime.datetime.fromisoformat(job["created_at"])
            begun = datetime.datetime.fromisoformat(job["started_at"])
            waits.append(1000 * (begun - created).total_seconds())
        for job_id in batch_ids:
            finish(job_id)
    wall = time.perf_counter() - started
    stack.check_alive()
    pids: set[int] = set()
    for line in logs.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            message = str(record.get("message", ""))
            words = message.split(" ")
            if words[0] == "job" and words[2:3] == ["succeeded:"] and words[1] in batch_ids:
                pids.add(int(record["pid"]))
    tasks = analyze_task_ms([logs])
    return Flood(
        batch_jobs=len(batch),
        wall_s=wall,
        processes=len(pids),
        cores=os.cpu_count() or 1,
        batch_task_ms=[tasks[j] for j in batch_ids if j in tasks],
        interactive_wait_ms=waits,
        load=load,
    )


def analyze_task_ms(logs: list[Path]) -> dict[str, float]:
    """Celery's run time of every earshot.analyze task in the given worker logs, by job id."""
    found: dict[str, float] = {}
    for path in logs:
        for job_id, seconds in TASK_LINE.findall(path.read_text(errors="replace")):
            found[job_id] = 1000 * float(seconds)
    return found


def in_process(pipeline: str, clips: list[Path], cpu: int) -> list[float]:
    """CPU ms per clip of one warm, pinned process running ``pipeline`` on ``clips``."""
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            str(MEASURE),
            "--pipeline",
            pipeline,
            "--cpu",
            str(cpu),
            "--warmup",
            str(clips[0]),
            *map(str, clips[1:]),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )
    if done.returncode != 0:
        log(f"in-process {pipeline} failed (left out):\n{done.stderr[-2000:]}")
        return []
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return [1000 * r["cpu_s"] for r in report["runs"]]


# --- report ------------------------------------------------------------------------------


def render(
    *,
    argv: list[str],
    started: datetime.datetime,
    elapsed_s: float,
    runs: list[Run],
    inproc: dict[tuple[str, int], list[float]],
    task_ms: dict[int, list[float]],
    flood: Flood | None = None,
) -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "analysis", "core", "tasks", "api", "earshot"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    code = f"`{head}`" + (" with uncommitted changes of the working tree" if dirty else "")
    lines = [
        "## Real clips through the whole service, earshot against the seed design (issue 15)",
        "",
        f"Run of {started:%Y-%m-%d %H:%M} UTC, earshot at {code}, "
        f"`{' '.join(['scripts/bench_pipelines.py', *argv])}`, {os.cpu_count()} CPUs, "
        f"{elapsed_s / 60:.1f} min in all. Clips: OGG Vorbis cuts of the wesnoth tracks "
        "(stereo, 44.1/48 kHz), distinct per run. The three stacks run at once, idle but "
        "for the one measured, and each set of clips goes through them back to back; every "
        "set runs in rounds, one after another, each with its own clips, and a ratio is the "
        "median of its rounds' (each round's earshot run against the seed's of that round). "
        "jobs/s is clips over first upload to last "
        "result, each uploader sending its next clip when the last one's result is there "
        f"(the seed's client polls every {POLL_S * 1000:.0f} ms; earshot's asks with "
        f"`?wait={HOLD_S:g}&until=finished`, held by the server until the job has ended, as "
        "earshot's own client does when it only wants the outcome), at batch priority. "
        "*load* is the 1-minute "
        "load average when the run started: other work on this shared machine competes.",
        "",
        "| clip | uploaders | pipeline | jobs per round | jobs/s by round | latency p50 ms "
        "| load | earshot ÷ seed by round | earshot ÷ seed (median) |",
        "|---:|---:|---|---:|---|---:|---|---|---:|",
    ]
    ratios = ratios_to_seed(runs)
    groups: dict[tuple[int, int, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.clip_s, r.uploaders, r.pipeline), []).append(r)
    for (clip_s, uploaders, pipeline), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], not kv[0][2].startswith("s"))
    ):
        group.sort(key=lambda r: r.round)
        by_round = ratios.get((clip_s, uploaders, pipeline), [])
        latencies = [x for r in group for x in r.latency_s]
        lines.append(
            f"| {clip_s} s | {uploaders} | {pipeline} | {group[0].jobs} "
            f"| {', '.join(f'{r.jobs_per_s:.1f}' for r in group)} "
            f"| {statistics.median(latencies) * 1000:.0f} "
            f"| {', '.join(f'{r.load:.2f}' for r in group)} "
            f"| {', '.join(f'{x:.2f}' for x in by_round)} "
            f"| {f'{statistics.median(by_round):.2f}' if by_round else ''} |"
        )
    lines += [
        "",
        "The analysis alone, warm, in one process pinned to one CPU (scripts/bench/measure.py; "
        "the first clip is the uncounted warm-up), CPU ms per clip, and Celery's run time of "
        "earshot's analyze task in the workers above (analysis, job-row writes, result files), "
        "median:",
        "",
        "| clip | tutorial librosa, CPU ms | earshot `analyze_file`, CPU ms "
        "| earshot analyze task (service), ms |",
        "|---:|---:|---:|---:|",
    ]
    for seconds in sorted({s for _, s in inproc}):
        tut = inproc.get(("tutorial", seconds), [])
        ear = inproc.get(("earshot", seconds), [])
        task = task_ms.get(seconds, [])
        lines.append(f"| {seconds} s | {_median(tut)} | {_median(ear)} | {_median(task)} |")
    if flood is not None:
        longest = max(flood.batch_task_ms, default=float("nan"))
        worst = max(flood.interactive_wait_ms, default=float("nan"))
        lines += [
            "",
            f"A batch flood on `earshot dev`: {flood.batch_jobs} distinct 30-second clips "
            "uploaded at once at batch priority, then, while they run, "
            f"{len(flood.interactive_wait_ms)} interactive uploads 0.3 s apart (load "
            f"{flood.load:.2f} at the start). *Processes* counts the pool processes whose log "
            "lines report a batch job done; an interactive job's wait is its `created_at` → "
            "`started_at`, against the batch analyze tasks' run time.",
            "",
            "| batch jobs/s | processes that ran batch jobs / cores | batch task ms p50 / max "
            "| interactive wait ms (each) | longest wait ≤ one task |",
            "|---:|---:|---:|---:|---|",
            f"| {flood.jobs_per_s:.1f} | {flood.processes} / {flood.cores} "
            f"| {_median(flood.batch_task_ms)} / {longest:.0f} "
            f"| {', '.join(f'{w:.0f}' for w in flood.interactive_wait_ms)} "
            f"| {'✓' if worst <= longest else '✗'} |",
        ]
    return "\n".join(lines) + "\n"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "—"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips per run")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument(
        "--no-in-process", action="store_true", help="skip the analysis-alone figures"
    )
    parser.add_argument(
        "--only", choices=("seed", "dev", "scaled"), action="append", help="run only these"
    )
    parser.add_argument("--no-flood", action="store_true", help="skip the batch flood on dev")
    # `make bench BENCH_ARGS=…` passes scripts/bench.py's options here too.
    args, ignored = parser.parse_known_args(argv)
    if ignored:
        log(f"bench_pipelines: ignoring {' '.join(ignored)}")
    argv = [a for a in argv if a not in ignored]
    counts = QUICK_CLIPS if args.quick else CLIPS
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()

    # Distinct clips per (length, uploaders, round): earshot answers a file it has seen from
    # cache.
    clip_sets: dict[tuple[int, int, int], list[Path]] = {}
    sets = [(uploaders, round_) for round_ in range(rounds) for uploaders in UPLOADERS]
    for seconds, n in counts.items():
        pool = make_clips(seconds, n * len(sets) + WARMUP_CLIPS)
        for k, (uploaders, round_) in enumerate(sets):
            clip_sets[(seconds, uploaders, round_)] = pool[
                WARMUP_CLIPS + k * n : WARMUP_CLIPS + (k + 1) * n
            ]
    warmup = make_clips(5, WARMUP_CLIPS)
    # The flood's clips come after those of the runs above (distinct: none is a cache hit).
    used_30 = counts[30] * len(sets) + WARMUP_CLIPS
    flood_pool = make_clips(30, used_30 + FLOOD_BATCH + FLOOD_INTERACTIVE)
    flood_batch = flood_pool[used_30 : used_30 + FLOOD_BATCH]
    flood_interactive = flood_pool[used_30 + FLOOD_BATCH :]
    flood: Flood | None = None

    inproc: dict[tuple[str, int], list[float]] = {}
    cpu = max(os.sched_getaffinity(0))
    for seconds in () if args.no_in_process else counts:
        clips = make_clips(seconds, IN_PROCESS_CLIPS + 1)
        for pipeline in ("tutorial", "earshot"):
            log(f"in-process: {pipeline} on {IN_PROCESS_CLIPS} x {seconds} s clips …")
            inproc[(pipeline, seconds)] = in_process(pipeline, clips, cpu)

    task_ms: dict[int, list[float]] = {}
    factories = {"seed": seed_stack, "dev": earshot_dev_stack, "scaled": earshot_scaled_stack}
    with (
        tempfile.TemporaryDirectory(prefix="earshot-bench-pipelines-") as tmp,
        contextlib.ExitStack() as up,
    ):
        stacks: dict[str, Stack] = {}
        workdirs: dict[str, Path] = {}
        for key, factory in factories.items():
            if args.only and key not in args.only:
                continue
            workdirs[key] = Path(tmp) / key
            workdirs[key].mkdir()
            log(f"{key}: starting …")
            stacks[key] = up.enter_context(factory(workdirs[key]))
        runs = measure_stacks(stacks, clip_sets, warmup)
        for key, stack in stacks.items():
            tasks = analyze_task_ms(list(workdirs[key].glob("*.log")))
            for run in runs:
                if run.pipeline == stack.name:
                    task_ms.setdefault(run.clip_s, []).extend(
                        tasks[h] for h in run.handles if h in tasks
                    )
        if "dev" in stacks and not args.no_flood:
            log(f"dev: batch flood of {len(flood_batch)} x 30 s clips …")
            flood = batch_flood(
                stacks["dev"], flood_batch, flood_interactive, workdirs["dev"] / "dev.log"
            )
    section = render(
        argv=argv,
        started=started,
        elapsed_s=time.perf_counter() - t0,
        runs=runs,
        inproc=inproc,
        task_ms=task_ms,
        flood=flood,
    )
    print(section)
    CACHE.mkdir(exist_ok=True)
    (CACHE / "pipelines.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": " ".join(["scripts/bench_pipelines.py", *argv]),
                "runs": [{**r.__dict__, "jobs_per_s": r.jobs_per_s} for r in runs],
                "in_process_cpu_ms": {f"{p} {s}": v for (p, s), v in inproc.items()},
                "task_ms": task_ms,
                "flood": None if flood is None else flood.__dict__,
            },
            indent=1,
        )
    )
    if not args.no_write:
        write_section(DOC, "bench_pipelines.py", section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, HarnessError) as exc:
        log(f"bench_pipelines: {exc}")
        sys.exit(1)
