"""Log lines that say which request and which job they belong to.

Two context variables, ``request_id`` and ``job_id``, are stamped on every record by
:class:`ContextFilter`. The API sets ``request_id`` per HTTP request; Celery hooks carry it in
the task message headers to the worker, which sets both variables for the task it runs. So one
``grep <request id>`` finds the upload, the publish and every line of the analysis.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

from core.settings import Settings

request_id: ContextVar[str | None] = ContextVar("earshot_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("earshot_job_id", default=None)

# The task message header that carries the request id from publisher to worker.
REQUEST_ID_HEADER = "earshot_request_id"

LOG_FORMATS = ("json", "pretty", "auto")

# Libraries that narrate routine steps at INFO. Alembic announces its plugins and dialect on
# every start (the embedded mode migrates on every start); core.migrate logs the one line
# that matters, a revision change.
# billiard (Celery's multiprocessing) logs every pool process start at INFO.
QUIET_LOGGERS = {"alembic": logging.WARNING, "multiprocessing": logging.WARNING}
# Single lines of libraries that say nothing to an earshot user, by logger and the start of
# the message's template. kombu warns "No hostname was supplied" each time it describes a
# connection whose URL has no host, which filesystem:// never has (embedded mode only: for a
# network broker it is a real hint). Celery's "<hostname> ready." is replaced by the worker
# pool's own line (earshot/service_cmd.py), which names its queues and size.
QUIET_MESSAGES = {"celery.apps.worker": ("%s ready.",)}
EMBEDDED_QUIET_MESSAGES = {"kombu.connection": ("No hostname was supplied",)}

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is
# written out as a field of its own.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "request_id", "job_id", "taskName"}
)


class ContextFilter(logging.Filter):
    """Stamp ``request_id`` and ``job_id`` from the context variables on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


class DropMessages(logging.Filter):
    """Drop the records whose message template starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.prefixes))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "job_id": getattr(record, "job_id", None),
            # Which process: `earshot dev` writes every pool's lines to one stream.
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PrettyFormatter(logging.Formatter):
    """Human-readable lines for a terminal, ids in brackets when set."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{name}={value}"
            for name in ("request_id", "job_id")
            if (value := getattr(record, name, None))
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def resolve_format(log_format: str, stream: IO[str]) -> str:
    """``json`` or ``pretty``: ``auto`` is pretty on a terminal, JSON everywhere else."""
    if log_format not in LOG_FORMATS:
        from core.errors import ConfigurationError

        raise ConfigurationError(
            f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)} (EARSHOT_LOG_FORMAT)"
        )
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return "pretty" if isatty is not None and isatty() else "json"
    return log_format


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``settings.log_format``; return the handler.

    Replaces the root logger's handlers, so calling it twice does not double the lines.
    """
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if resolve_format(settings.log_format, stream) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PrettyFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, root.level))
    quiet = {**QUIET_MESSAGES, **(EMBEDDED_QUIET_MESSAGES if settings.embedded else {})}
    for name in {*QUIET_MESSAGES, *EMBEDDED_QUIET_MESSAGES}:
        logger = logging.getLogger(name)
        for old_filter in [f for f in logger.filters if isinstance(f, DropMessages)]:
            logger.removeFilter(old_filter)
        if name in quiet:
            logger.addFilter(DropMessages(quiet[name]))
    return handler


@contextmanager
def log_context(*, request: str | None = None, job: str | None = None) -> Iterator[None]:
    """Set ``request_id`` and/or ``job_id`` for the enclosed block, then restore them."""
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
    if request is not None:
        tokens.append((request_id, request_id.set(request)))
    if job is not None:
        tokens.append((job_id, job_id.set(job)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def add_request_id_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: copy the current request id into the message headers."""
    current = request_id.get()
    if current is not None and headers is not None:
        headers[REQUEST_ID_HEADER] = current


def request_id_of(task_request: Any) -> str | None:
    """The request id a task message carried, wherever this Celery version put it."""
    # Protocol 2 merges custom headers into the request itself; older paths keep a dict.
    found = getattr(task_request, REQUEST_ID_HEADER, None)
    if found is None:
        headers = getattr(task_request, "headers", None)
        if isinstance(headers, Mapping):
            found = headers.get(REQUEST_ID_HEADER)
    return str(found) if found is not None else None


_task_tokens: dict[str, list[tuple[ContextVar[str | None], Token[str | None]]]] = {}


def bind_task_context(
    task_id: str | None = None, task: Any = None, args: Any = None, **_: Any
) -> None:
    """``task_prerun``: set ``request_id`` from the message and ``job_id`` from the first arg."""
    tokens = []
    rid = request_id_of(task.request) if task is not None else None
    if rid is not None:
        tokens.append((request_id, request_id.set(rid)))
    # Every earshot task takes the job id as its first argument.
    if args and isinstance(args[0], str):
        tokens.append((job_id, job_id.set(args[0])))
    if task_id is not None:
        _task_tokens[task_id] = tokens


def unbind_task_context(task_id: str | None = None, **_: Any) -> None:
    """``task_postrun``: restore the context variables set for the task."""
    for var, token in reversed(_task_tokens.pop(task_id or "", [])):
        try:
            var.reset(token)
        except ValueError:
            # Set in another context (a thread pool ran prerun elsewhere): clear instead.
            var.set(None)


def keep_our_logging(**_: Any) -> None:
    """``setup_logging``: a connected receiver tells a Celery worker to leave logging alone.

    Otherwise Celery gives its pool-process logger a handler and format of its own, and the
    lines about pool processes come out as plain text among the JSON.
    """
    from celery.utils.log import get_multiprocessing_logger

    pool_logger = get_multiprocessing_logger()
    if pool_logger is not None:
        # It never propagates to the root logger: hand it the root's handlers instead.
        pool_logger.handlers = list(logging.getLogger().handlers)


def install_celery_hooks() -> None:
    """Connect the publish, prerun/postrun and logging hooks (idempotent: signals are global)."""
    from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

    before_task_publish.connect(add_request_id_header, weak=False, dispatch_uid="earshot.logs")
    task_prerun.connect(bind_task_context, weak=False, dispatch_uid="earshot.logs")
    task_postrun.connect(unbind_task_context, weak=False, dispatch_uid="earshot.logs")
    setup_logging.connect(keep_our_logging, weak=False, dispatch_uid="earshot.logs")
