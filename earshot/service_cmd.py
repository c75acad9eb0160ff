"""``earshot dev | serve | worker | migrate | warmup``: run the service, or one part of it.

Settings come from ``EARSHOT_*`` variables (see README "Settings"); the flags cover only what
differs between processes of one deployment. Heavy imports stay inside ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.names import Queue

log = logging.getLogger("earshot")

# How often `earshot dev` and `earshot worker --reconcile` look for lost jobs.
RECONCILE_INTERVAL_S = 60.0

# Seconds `earshot dev` waits for its analysis pool to be warm before starting the others
# anyway (they start as soon as it is).
DEV_STAGGER_S = 30.0

# Where `earshot warmup` (run by `make install`) leaves numba's compiled code for the workers:
# inside the Python environment, so it comes and goes with the install.
INSTALL_NUMBA_CACHE = Path(sys.prefix) / "var" / "earshot" / "numba-cache"

# The queues whose pools analyse audio (and so warm the analysis up before they fork).
ANALYSIS_QUEUES = frozenset({Queue.INTERACTIVE.value, Queue.BATCH.value})

# Seconds `earshot dev` gives its children to stop after Ctrl-C before killing them. A running
# analysis is not waited for: its job is re-queued by the reconciler at the next start.
STOP_TIMEOUT_S = 10.0


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name in ("dev", "serve"):
        parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
        parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    if name == "worker":
        parser.add_argument(
            "--queues",
            default=",".join(q.value for q in Queue),
            help="comma-separated queues to consume (default: all)",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="worker processes (default: EARSHOT_WORKER_CONCURRENCY)",
        )
        parser.add_argument(
            "--reconcile",
            action="store_true",
            help=f"re-queue lost jobs every {RECONCILE_INTERVAL_S:.0f} s (filesystem:// broker)",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus metrics of this host's earshot processes on this port "
            "(for a worker host without an API)",
        )


def run(name: str, args: argparse.Namespace) -> int:
    from core.logs import configure_logging
    from core.metrics import enable_multiprocess, prune_dead_processes
    from core.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    if name not in ("migrate", "warmup"):
        # Before any metric exists: every process of this host writes to one folder.
        metrics_dir = enable_multiprocess(settings)
        if name == "dev":
            prune_dead_processes(metrics_dir)  # the last run's totals; dev starts them all
    if name == "migrate":
        return migrate()
    if name == "warmup":
        return warmup_command()
    if name in ("dev", "serve") and not open_bind_allowed(settings, args.host):
        print(
            f"error: no API keys are set (EARSHOT_API_KEYS or EARSHOT_API_KEYS_FILE), so the "
            f"service is open to anyone who reaches it and listens on 127.0.0.1 only; set keys "
            f"to listen on {args.host}",
            file=sys.stderr,
        )
        return 2
    if name == "serve":
        return serve(args.host, args.port)
    if name == "worker":
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        return worker(
            queues,
            concurrency=args.concurrency,
            reconcile=args.reconcile,
            metrics_port=args.metrics_port,
        )
    if name == "dev":
        return dev(args.host, args.port)
    raise ValueError(f"unknown service command {name!r}")


def open_bind_allowed(settings: Any, host: str) -> bool:
    """Whether the API may listen on ``host``: anywhere with API keys, loopback only without."""
    from api.auth import api_keys

    if api_keys(settings):
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def migrate() -> int:
    from core.migrate import upgrade
    from core.settings import get_settings

    settings = get_settings()
    revision = upgrade(settings.effective_database_url)
    print(f"job store at revision {revision}")
    return 0


def serve(host: str, port: int) -> int:
    import uvicorn

    # log_config=None: uvicorn's loggers go through the root handler (core.logs format).
    # The connection limits are uvicorn's defaults, stated because docs/reliability.md relies
    # on them: h11 (the parser tested; httptools would differ) answers 400 to a request head
    # over 16 KiB, and a keep-alive connection idle for 5 s is closed. A head that is still
    # arriving has no timeout in uvicorn; it costs a socket and no thread, as the app is not
    # called before the head is complete. limit_concurrency stays off: it counts connections,
    # so slow clients would get /healthz answered 503. Uploads are bounded by the app itself
    # (EARSHOT_MAX_CONCURRENT_UPLOADS, EARSHOT_UPLOAD_IDLE_TIMEOUT_S).
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=None,
        http="h11",
        h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=5,
    )
    return 0


def worker(
    queues: list[str], *, concurrency: int | None, reconcile: bool, metrics_port: int | None = None
) -> int:
    from core.settings import get_settings

    settings = get_settings()
    known = {q.value for q in Queue}
    unknown = [q for q in queues if q not in known]
    if unknown or not queues:
        print(f"error: unknown queue(s) {unknown}; choose from {sorted(known)}", file=sys.stderr)
        return 2
    use_numba_cache(settings)

    from celery.signals import worker_process_init, worker_ready, worker_shutdown

    import tasks.analyze  # noqa: F401 - registers the task on the app
    from core import workers
    from core.runtime import build_runtime
    from tasks.app import configure_worker

    runtime = build_runtime(settings)
    configure_worker(runtime.celery, settings)
    if metrics_port is not None:
        from core import metrics

        metrics.serve(metrics_port, store=runtime.jobs, directory=metrics.multiprocess_dir())

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: Any) -> None:
        # A forked pool process must not share the parent's database connections.
        runtime.jobs.engine.dispose(close=False)

    started = time.monotonic()
    # A pool that only delivers webhooks waits on receivers' sockets: threads, many of them,
    # and no librosa to warm up. Any other pool forks processes that analyse or draw.
    webhooks_only = queues == [Queue.WEBHOOK.value]
    if webhooks_only:
        pool = ["--pool=threads", f"--concurrency={concurrency or settings.webhook_concurrency}"]
    else:
        warm_up(
            analyses=bool(ANALYSIS_QUEUES & set(queues)), draws_plots=Queue.RENDER.value in queues
        )
        pool = [f"--concurrency={concurrency or settings.worker_concurrency}"]
    if reconcile:
        from core.reconcile import reconcile_forever

        stop = threading.Event()
        threading.Thread(
            target=reconcile_forever,
            kwargs={"runtime": runtime, "interval_s": RECONCILE_INTERVAL_S, "stop": stop},
            name="reconcile",
            daemon=True,
        ).start()
    pool_name = "+".join(q.removeprefix("earshot.") for q in queues)
    hostname = f"{pool_name}.{os.getpid()}"
    presence: list[Path | None] = []

    # Once the pool consumes (its warm-up is behind it), /readyz counts its queues as served;
    # on RabbitMQ the broker's consumer count says the same without a record.
    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        presence.append(workers.announce(settings, hostname, queues))

    @worker_shutdown.connect(weak=False)
    def _stopping(**_: Any) -> None:
        for path in presence:
            workers.withdraw(path)

    # The one line a pool logs when it consumes (Celery's own "<hostname> ready." is dropped,
    # see core.logs.QUIET_MESSAGES); " ready." stays in it for whoever waits on that text.
    @worker_ready.connect(weak=False)
    def _log_ready(**_: Any) -> None:
        log.info(
            "worker pool %s ready. queues %s, concurrency %s (%s), %.1f s after start",
            pool_name,
            ",".join(queues),
            pool[-1].split("=", 1)[1],
            "threads" if webhooks_only else "processes",
            time.monotonic() - started,
        )

    runtime.celery.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            *pool,
            f"--loglevel={settings.log_level.upper()}",
            f"--hostname={hostname}@%h",
            # Mingle and gossip talk between workers over broadcast; nothing here uses them
            # and on filesystem:// they only slow the start.
            "--without-mingle",
            "--without-gossip",
        ]
    )
    return 0


def use_numba_cache(settings: Any) -> Path:
    """Point numba's JIT cache at a writable folder (unless NUMBA_CACHE_DIR is set); its path.

    numba caches next to the source by default, which is read-only in an installed package;
    without a writable cache every worker recompiles at every start (~25 s of a cold start).
    The default is the folder `earshot warmup` fills at install time (`make install`) inside
    the environment, so a fresh clone's first `earshot dev` loads compiled code; if that is
    not writable, a folder in the data dir.
    """
    if "NUMBA_CACHE_DIR" not in os.environ:
        cache = INSTALL_NUMBA_CACHE
        try:
            cache.mkdir(parents=True, exist_ok=True)
            writable = os.access(cache, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            cache = (Path(settings.data_dir) / "numba-cache").resolve()
            cache.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(cache)
    return Path(os.environ["NUMBA_CACHE_DIR"])


def use_installed_numba_cache() -> bool:
    """For ``earshot analyze``: load numba's compiled code from the cache `make install`
    warmed, when it holds this very code's build (`warm_up`'s stamp) and nothing else chose a
    cache (NUMBA_CACHE_DIR); whether it did.

    Otherwise numba caches next to the sources, as before: cold after an install, so the
    first run compiled for ~20 s, and two first runs side by side compiled into the same
    folder at once, which has left entries that crash every later run with SIGSEGV (seen with
    librosa's beat tracker). From a warm cache a run only reads. Must run before numba is
    imported.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return False
    if not warm_stamp(INSTALL_NUMBA_CACHE).exists():
        return False
    os.environ["NUMBA_CACHE_DIR"] = str(INSTALL_NUMBA_CACHE)
    return True


def warm_up(*, analyses: bool = True, draws_plots: bool = False) -> None:
    """Pay librosa's imports and numba's JIT once in the parent, before the pool forks.

    A pool that draws plots also pays matplotlib's imports and first figure here: otherwise
    each pool process's first render took about a second instead of tens of milliseconds
    (scripts/bench_service.py, cold start). A pool that only draws skips the analysis.
    """
    import analysis

    if draws_plots:
        warm_up_plots()
    warmup = getattr(analysis, "warmup", None)
    if warmup is None or not analyses:
        return
    started = time.monotonic()
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        warmup()
    else:
        import fcntl

        # Worker pools sharing a cold NUMBA_CACHE_DIR crash (SIGSEGV) when they JIT-compile
        # and write it at the same time; they take turns, and the later ones load the cache.
        # Once a warm-up of this very code has filled the cache (its stamp is there), pools
        # only read it and warm up side by side: three pools of `earshot dev` taking turns
        # cost ~4 s each on a fresh start.
        Path(cache).mkdir(parents=True, exist_ok=True)
        stamp = warm_stamp(Path(cache))
        if stamp.exists():
            warmup()
        else:
            with open(Path(cache) / ".earshot-warmup.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                warmup()
                for old in Path(cache).glob(".earshot-warm-*"):
                    old.unlink(missing_ok=True)  # an earlier code's; this one supersedes it
                stamp.touch()
    log.info("analysis warmed up in %.1f s", time.monotonic() - started)


def warm_stamp(cache: Path) -> Path:
    """The file whose presence in ``cache`` says a warm-up of this very code filled it."""
    return cache / f".earshot-warm-{_code_stamp()}"


def _code_stamp() -> str:
    """A digest of what numba compiles from: library versions and our analysis sources (their
    sizes and modification times), so an edit or an upgrade is warmed up under the lock again."""
    import hashlib
    from importlib import metadata

    import analysis

    digest = hashlib.sha256()
    for package in ("numba", "librosa", "numpy", "llvmlite"):
        digest.update(f"{package}={metadata.version(package)};".encode())
    for source in sorted(Path(analysis.__file__).parent.glob("*.py")):
        stat = source.stat()
        digest.update(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def warmup_command() -> int:
    """``earshot warmup``: fill the numba cache the workers load (run by `make install`)."""
    from core.settings import get_settings

    started = time.monotonic()
    cache = use_numba_cache(get_settings())
    warm_up(analyses=True)
    print(f"numba cache in {cache} warmed up in {time.monotonic() - started:.1f} s")
    return 0


def warm_up_plots() -> None:
    """Draw one small spectrogram so matplotlib is imported and set up before the fork."""
    import numpy as np

    from analysis.plots import PLOT_SR, spectrogram_png, waveform_peaks

    started = time.monotonic()
    y = 0.1 * np.sin(2 * np.pi * 440.0 * np.arange(PLOT_SR) / PLOT_SR).astype(np.float32)
    waveform_peaks(y, PLOT_SR)
    spectrogram_png(y, PLOT_SR, beats_s=[0.5])
    log.info("plots warmed up in %.1f s", time.monotonic() - started)


def dev(host: str, port: int) -> int:
    """The API and one worker pool per queue, embedded defaults, until Ctrl-C, SIGTERM or
    SIGHUP (the terminal closed)."""
    from core.errors import DataDirBusy
    from core.processes import die_with_parent, lock_data_dir, release_data_dir
    from core.reconcile import reconcile, reconcile_forever
    from core.runtime import build_runtime
    from core.settings import get_settings

    settings = get_settings()
    data_dir = Path(settings.data_dir).resolve()
    # Before anything is re-queued: a second `earshot dev` on this data dir would take every
    # job the first one is running for lost, re-publish it and start a second API on the port.
    try:
        lock = lock_data_dir(data_dir)
    except DataDirBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    runtime = build_runtime(settings)
    # No worker is alive yet: every active job whose message is not in the folder was lost
    # by the last run.
    requeued = reconcile(runtime, workers_alive=False)
    if requeued:
        print(f"re-queued {len(requeued)} job(s) left over by the last run")

    command = [sys.executable, "-m", "earshot"]
    env = {**os.environ, "EARSHOT_DATA_DIR": str(data_dir)}
    parent = os.getpid()

    def die_with_dev() -> None:
        # In the child between fork and exec: a dev killed by SIGKILL (or the OOM killer)
        # takes its children along instead of leaving them serving the port and analysing
        # jobs the next dev re-queues. SIGKILL, not SIGTERM: a worker's warm shutdown would
        # finish the running analysis first, and nobody is left to wait for it.
        die_with_parent(signal.SIGKILL, parent_pid=parent)

    # Each child leads its own process group: Ctrl-C reaches only this process, which then
    # stops every child together with its pool processes (see stop_children). Each child
    # also holds the data dir lock, so it stays taken until the last of them is gone.
    def start(args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*command, *args],
            env=env,
            start_new_session=True,
            preexec_fn=die_with_dev,
            pass_fds=(lock.fileno(),),
        )

    started = time.monotonic()
    # EARSHOT_WORKER_CONCURRENCY, when set, sizes the analysis pool; otherwise every core.
    explicit = "EARSHOT_WORKER_CONCURRENCY" in os.environ
    first_pool, *later_pools = dev_pools(settings.worker_concurrency if explicit else None)
    children = [
        start(["serve", "--host", host, "--port", str(port)]),
        start(["worker", *first_pool]),
    ]
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _stop)
    threading.Thread(
        target=reconcile_forever,
        kwargs={"runtime": runtime, "interval_s": RECONCILE_INTERVAL_S, "stop": stop},
        name="reconcile",
        daemon=True,
    ).start()
    print(f"earshot is running at http://{host}:{port}  (API docs: /docs; Ctrl-C stops)")
    print(f"data under {data_dir}")
    print("workers starting: uploads wait in their queue until a worker is warm", flush=True)
    exit_code = 0
    workers_ready = False
    while not stop.wait(0.5):
        if not workers_ready:
            warm = runtime.warm_queues()
            # The analysis pool warms up alone, on every core, so that a first upload is
            # analysed as soon as possible; the other pools start once it consumes (or after
            # DEV_STAGGER_S, should it be slow).
            if later_pools and (
                warm[Queue.INTERACTIVE.value] or time.monotonic() - started > DEV_STAGGER_S
            ):
                children += [start(["worker", *pool]) for pool in later_pools]
                later_pools = []
            if all(warm.values()):
                workers_ready = True
                print(f"workers ready after {time.monotonic() - started:.1f} s", flush=True)
        dead = [c for c in children if c.poll() is not None]
        if dead:
            what = " ".join(str(a) for a in dead[0].args[3:])  # type: ignore[index]
            print(f"error: `earshot {what}` exited with {dead[0].returncode}", file=sys.stderr)
            exit_code = 1
            break
    stop_children(children)
    runtime.close()
    release_data_dir(lock)
    return exit_code


def dev_pools(processes: int | None = None, cpus: int | None = None) -> list[list[str]]:
    """The worker pools `earshot dev` starts, as `earshot worker` arguments.

    One analysis pool, a process per core (or ``processes``, EARSHOT_WORKER_CONCURRENCY when
    set), on the interactive and the batch queue: a batch uses every core while nothing
    interactive waits, so do the chunks of a long file, and an interactive upload still starts
    within one task's time during a batch flood, because each process takes an interactive
    job first (``core.broker``'s channel polls in ``Queue`` order). One pool also warms up
    once, not twice. Plots and webhooks keep pools of their own.
    """
    analysis_processes = processes or cpus or os.cpu_count() or 1
    return [
        [
            f"--queues={Queue.INTERACTIVE.value},{Queue.BATCH.value}",
            f"--concurrency={analysis_processes}",
        ],
        [f"--queues={Queue.RENDER.value}"],
        [f"--queues={Queue.WEBHOOK.value}"],
    ]


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child (a warm shutdown), then SIGKILL whatever is still up.

    SIGTERM goes to the child alone: a Celery worker then stops its own pool processes, which
    exit cleanly. Sent to the whole group it also reached each pool process directly, and the
    worker logged every one of them at ERROR ("exited with signal 15") on a normal stop. The
    SIGKILL goes to each child's process group, so pool processes still busy with an analysis
    at the deadline stop with their worker instead of finishing it as orphans.
    """
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
