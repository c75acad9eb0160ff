"""Real `earshot` child processes, for the benchmarks and the end-to-end tests alike.

scripts/bench_service.py, scripts/bench_chunks.py and tests/integration/conftest.py all start
`python -m earshot …` with its own log file, in its own session, wait until it is ready, read
what it has used, and stop it with its whole process group (Celery's pool included). This is
that one harness. It is plain stdlib and raises `HarnessError`s; the pytest side (fail, skip)
stays in the conftest.

Import it as ``scripts.bench.harness`` with the repository root on ``sys.path`` (the tests have
it; the bench scripts append it). It imports none of our packages, so a bench run against an
exported commit (``--ref``) still loads that commit's code, not the working tree's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from earshot.cli import NATIVE_THREAD_VARS

# Thread pools of the numeric libraries, the variables `earshot` itself sets to one thread
# (earshot.cli); the bench sets them for the processes it measures in-process and the seed's.
THREAD_VARS = NATIVE_THREAD_VARS
# The line Celery logs (at INFO) once a worker consumes, after earshot's warm-up.
WORKER_READY = " ready."
# Bound of a child's graceful stop before its process group is killed.
STOP_TIMEOUT_S = 30.0


class HarnessError(Exception):
    """Raised when a child process or a wait for it cannot go on."""


class ChildExited(HarnessError):
    """Raised when a child process that should be running has exited."""


class WaitTimeout(HarnessError):
    """Raised when a condition waited for has not come true within its bound."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, *, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def wait_for[T](
    probe: Callable[[], T | None], *, what: str, timeout: float, poll: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that.

    Raises `WaitTimeout` naming ``what`` after ``timeout`` seconds. Whatever ``probe`` raises
    (e.g. `ChildExited` from `Child.check_alive`) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(poll)


def child_env(
    data_dir: Path,
    numba_cache: Path,
    *,
    code: Path | None = None,
    single_thread: bool = False,
    **settings: str,
) -> dict[str, str]:
    """The environment of an `earshot` child: this one without any EARSHOT_*, then
    EARSHOT_DATA_DIR, NUMBA_CACHE_DIR, EARSHOT_LOG_LEVEL=INFO (the worker's ready line is an INFO
    line) and ``settings`` as EARSHOT_<NAME>.

    ``code``, when given, goes first on PYTHONPATH: the checkout (or exported commit) the child
    runs. ``single_thread`` sets every `THREAD_VARS` to 1.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    env["EARSHOT_DATA_DIR"] = str(data_dir)
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    env["EARSHOT_LOG_LEVEL"] = "INFO"
    if single_thread:
        env.update(dict.fromkeys(THREAD_VARS, "1"))
    env.update({f"EARSHOT_{k.upper()}": v for k, v in settings.items()})
    return env


def code_root(env: dict[str, str]) -> Path:
    """The checkout a child with ``env`` runs: the first PYTHONPATH entry.

    `python -m` puts the working directory first on sys.path, so a child must also start there.
    """
    first = env.get("PYTHONPATH", "").split(os.pathsep)[0]
    if not first:
        raise HarnessError("PYTHONPATH is empty: no checkout to run `python -m earshot` from")
    return Path(first)


def run_earshot(
    args: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run a short `earshot` command (e.g. ``migrate``) to its end; raise if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "earshot", *args],
        cwd=cwd or code_root(env),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise HarnessError(f"`earshot {' '.join(args)}` failed:\n{done.stdout}{done.stderr}")
    return done


def live_processes() -> Iterator[tuple[int, str, list[str]]]:
    """``(pid, command name, the /proc/<pid>/stat fields after the name)`` of every live process.

    The command name may hold spaces and parentheses; the fields after its last ")" don't:
    state ppid pgrp session ... (``process_cpu_s`` reads utime and stime from them).
    """
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        head, paren, rest = raw.rpartition(")")
        if paren:
            yield int(stat.parent.name), head.partition("(")[2], rest.split()


def process_cpu_s(fields: list[str]) -> float:
    """User + system CPU seconds from a process's ``live_processes`` fields."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid``."""
    return sum(process_cpu_s(fields) for _, _, fields in live_processes() if int(fields[2]) == pgid)


class Child:
    """``python -m earshot ARGS`` in its own session and process group, logging to a file.

    ``cwd`` defaults to the first PYTHONPATH entry of ``env`` (see `code_root`). ``program``
    replaces ``python -m earshot`` (the benchmarks' reference pipeline is a script of its own).
    """

    def __init__(
        self,
        args: list[str],
        *,
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
        program: list[str] | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [*(program or [sys.executable, "-m", "earshot"]), *self.args],
            cwd=cwd or code_root(env),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session and process group, so stop() also reaches Celery's pool processes.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group and session id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the child has written to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def exit_message(self, tail: int = 4000) -> str | None:
        """Why the child is not running (its exit code and the end of its log), or None."""
        code = self.process.poll()
        if code is None:
            return None
        return f"`earshot {' '.join(self.args)}` exited with {code}:\n{self.log()[-tail:]}"

    def check_alive(self) -> None:
        """Raise `ChildExited` (with the end of the log) if the child has exited."""
        message = self.exit_message()
        if message is not None:
            raise ChildExited(message)

    def wait_log(self, needle: str, *, what: str, timeout: float, poll: float = 0.1) -> float:
        """Wait until the log holds ``needle``; seconds since the start. Fails if the child dies."""

        def probe() -> bool:
            self.check_alive()
            return needle in self.log()

        try:
            wait_for(probe, what=what, timeout=timeout, poll=poll)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}:\n{self.log()[-3000:]}") from None
        return time.perf_counter() - self.started

    def wait_worker_ready(self, *, timeout: float, poll: float = 0.1) -> float:
        """Wait for a worker's ready line (its warm-up done); seconds since the start."""
        return self.wait_log(
            WORKER_READY, what="the worker to be ready", timeout=timeout, poll=poll
        )

    def cpu_s(self) -> float:
        """CPU seconds used so far by the child's live processes (its pool included)."""
        return group_cpu_s(self.process.pid)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child alone, if it still runs."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` to the child, wait up to ``timeout``, then SIGKILL its process group
        (stragglers included) and close the log; the child's exit code.

        The signal goes to the child alone, as a service manager stops a service: a Celery
        worker then drains its pool itself. Sent to the whole group, it also hit the pool
        processes, which the worker replaced (and warmed up) before shutting them down,
        seconds to tens of seconds per stop.
        """
        if self.process.poll() is None:
            if sig is not None:  # None: signalled already (stop_all)
                self.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()
        return int(self.process.returncode)


def stop_all(children: Iterable[Child], sig: int = signal.SIGTERM) -> list[int]:
    """Stop several children side by side: ``sig`` to each first, then wait for each as
    ``Child.stop`` does, so their graceful stops overlap instead of adding up; their exit
    codes."""
    children = list(children)
    for child in children:
        child.send_signal(sig)
    return [child.stop(None) for child in children]


# The mark below which scripts/bench.py owns docs/benchmarks.md; the other bench scripts keep
# their own generated sections above it.
BENCH_MARK = "<!-- generated by scripts/bench.py: everything below is overwritten -->"


def write_section(doc: Path, script: str, section: str) -> None:
    """Put ``section`` between ``script``'s generated-section marks in ``doc``: in place of
    its previous section, else just above scripts/bench.py's part, else at the end."""
    begin = f"<!-- generated by scripts/{script}: begin -->"
    end = f"<!-- generated by scripts/{script}: end -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    elif BENCH_MARK in text:
        head, tail = text.split(BENCH_MARK, 1)
        text = f"{head.rstrip()}\n\n{block}\n\n{BENCH_MARK}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    doc.write_text(text)


def require_port(port: int, name: str) -> None:
    if not port_open(port):
        raise HarnessError(f"{name} is not reachable on 127.0.0.1:{port}")


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh RabbitMQ vhost, deleted afterwards, so no earlier run's message reaches these
    workers; its amqp:// URL."""
    require_port(5672, "RabbitMQ")
    ctl = shutil.which("rabbitmqctl")
    if not ctl:
        raise HarnessError("rabbitmqctl is not on PATH; it creates the benchmark's own vhost")
    vhost = f"earshot_bench_{uuid.uuid4().hex[:12]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(
            [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; its SQLAlchemy URL."""
    require_port(5432, "PostgreSQL")
    import psycopg  # only the scaled-out runs need it

    name = f"earshot_bench_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 dbname=postgres user=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
