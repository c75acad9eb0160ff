"""Prometheus metrics of the workers, and the scrape that aggregates every process.

Several processes share one host: the API (one or more uvicorn processes) and each worker pool
with its forked children. prometheus_client's multiprocess mode has each process write its
samples to files in one folder (``PROMETHEUS_MULTIPROC_DIR``, by default ``<data dir>/metrics``)
and the scrape sums them, so a counter does not drop when a pool process is replaced.

Metric objects are made on first use rather than at import: the value store (in memory or
mmapped file) is fixed when a metric is made, and :func:`enable_multiprocess` has to run first.
Queue depth is not a metric any process updates: it is read from the job store at scrape time,
so it is right for every broker, including ``filesystem://``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core.jobs import JobRow, JobStore
from core.names import ANALYZE_TASK, JobStatus, Priority
from core.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Analysis time over audio time: 0.05 means a 60 s track took 3 s. Values above 1 mean the
# service falls behind real time.
REALTIME_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# One task: from a cache hit (well under a second) to the soft time limit (30 min).
TASK_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

_metrics: dict[str, MetricWrapperBase] = {}


def metric[M: MetricWrapperBase](
    kind: type[M], name: str, documentation: str, labelnames: Iterable[str] = (), **kw: Any
) -> M:
    """The process's one instance of metric ``name``, made on first use."""
    found = _metrics.get(name)
    if found is None:
        found = _metrics[name] = kind(name, documentation, labelnames=tuple(labelnames), **kw)
    if not isinstance(found, kind):
        raise TypeError(f"metric {name!r} is a {type(found).__name__}, not a {kind.__name__}")
    return found


def multiprocess_dir() -> Path | None:
    """The folder processes write their samples to, when multiprocess mode is configured."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def enable_multiprocess(settings: Settings) -> Path:
    """Turn on multiprocess mode for this process and every process it starts.

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it, else ``<data dir>/metrics``.
    Call it before the first metric is made (the service commands do, first thing).
    """
    directory = multiprocess_dir() or (settings.data_dir / "metrics").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # Exported, so uvicorn and Celery pool processes (forked or spawned) write there too.
    os.environ[MULTIPROC_ENV] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client picks the value store at import time; it may have been imported
        # before the variable was set, so pick again now that it is.
        values.ValueClass = values.get_value_class()
    return directory


def prune_dead_processes(directory: Path) -> int:
    """Delete the sample files of processes that are gone; return how many were deleted.

    For the start of a whole deployment on one host (``earshot dev``): the totals of the last
    run go, which Prometheus reads as a counter reset. Files of live processes stay.
    """
    removed = 0
    for path in directory.glob("*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def jobs_finished() -> Counter:
    return metric(
        Counter,
        "earshot_jobs_finished",
        "Jobs a worker saw end, by final state and queue.",
        ("status", "queue"),
    )


def analysis_realtime_factor() -> Histogram:
    return metric(
        Histogram,
        "earshot_analysis_seconds_per_audio_second",
        "Wall-clock seconds of analysis per second of audio.",
        buckets=REALTIME_BUCKETS,
    )


def task_duration() -> Histogram:
    return metric(
        Histogram,
        "earshot_task_duration_seconds",
        "Wall-clock seconds of one task delivery, by task and queue.",
        ("task", "queue"),
        buckets=TASK_BUCKETS,
    )


def record_job_finished(status: str, *, queue: str) -> None:
    """Count a job that ended in ``status`` (succeeded, failed or canceled) on ``queue``."""
    jobs_finished().labels(status=status, queue=queue).inc()


def observe_analysis(*, seconds: float, audio_seconds: float) -> None:
    """Record how long the analysis of ``audio_seconds`` of audio took."""
    if audio_seconds > 0:
        analysis_realtime_factor().observe(seconds / audio_seconds)


_started: dict[str, float] = {}
_FINISHED = frozenset(s.value for s in JobStatus if s.finished)


def _queue_of(task: Any) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "unknown")


def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.perf_counter()


def _task_finished(
    task_id: str | None = None, task: Any = None, retval: Any = None, **_: Any
) -> None:
    started = _started.pop(task_id or "", None)
    if task is None:
        return
    queue = _queue_of(task)
    if started is not None:
        task_duration().labels(task=task.name, queue=queue).observe(time.perf_counter() - started)
    # The analyze task returns the job's status (other tasks return their own words, such as
    # a render's "failed"); a retry returns an exception instead.
    if task.name == ANALYZE_TASK and isinstance(retval, str) and retval in _FINISHED:
        record_job_finished(retval, queue=queue)


def install_celery_hooks() -> None:
    """Time every task and count finished jobs (idempotent; Celery signals are global)."""
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_task_started, weak=False, dispatch_uid="earshot.metrics")
    task_postrun.connect(_task_finished, weak=False, dispatch_uid="earshot.metrics")


class QueueDepthCollector(Collector):
    """``earshot_queue_depth{priority}``: queued jobs per priority, read from the job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        q = (
            select(JobRow.priority, func.count())
            .where(JobRow.status == JobStatus.QUEUED.value)
            .group_by(JobRow.priority)
        )
        try:
            with self.store.session() as s:
                counts = {str(p): int(n) for p, n in s.execute(q)}
        except Exception as exc:
            # A scrape must still answer (with the process metrics) while the database is
            # down; the missing series is the signal, and readiness says why.
            log.warning("queue depth not collected: %s", exc)
            return
        family = GaugeMetricFamily(
            "earshot_queue_depth", "Jobs waiting to be analysed, by priority.", labels=["priority"]
        )
        for priority in [p.value for p in Priority] + sorted(set(counts) - set(Priority)):
            family.add_metric([priority], counts.get(priority, 0))
        yield family


class _Forward(Collector):
    """Everything the process's default registry holds (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def scrape_registry(
    *, store: JobStore | None = None, directory: Path | None = None
) -> CollectorRegistry:
    """What a scrape shows: every process writing to ``directory`` summed (or, without it,
    this process alone), plus the queue depth from ``store``; read afresh at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if directory is not None:
        MultiProcessCollector(registry, path=str(directory))
    else:
        registry.register(_Forward())
    if store is not None:
        registry.register(QueueDepthCollector(store))
    return registry


def render(*, store: JobStore | None = None, directory: Path | None = None) -> tuple[bytes, str]:
    """The Prometheus text exposition of :func:`scrape_registry` and its content type."""
    return generate_latest(scrape_registry(store=store, directory=directory)), CONTENT_TYPE_LATEST


def serve(
    port: int, *, host: str = "0.0.0.0", store: JobStore | None = None, directory: Path | None
) -> WSGIServer:
    """Answer Prometheus scrapes on ``host:port`` from a daemon thread; return the server.

    For a worker host without an API (``earshot worker --metrics-port``); ``port=0`` picks a
    free one (``server.server_port``).
    """
    server, _thread = start_http_server(
        port, addr=host, registry=scrape_registry(store=store, directory=directory)
    )
    return server
