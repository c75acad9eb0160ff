"""``earshot submit``, ``status`` and ``fetch``: the batch client of the HTTP API.

``submit`` sends files and folders to the service, waits for the analyses and writes one result
document per input under ``--out``, plus ``summary.csv`` and ``manifest.jsonl``. The manifest
makes a run resumable: a second run skips what is done, polls what is still queued or running
and re-sends nothing, because every upload carries an ``Idempotency-Key`` derived from the
file's content.

Only httpx and the standard library are imported here: the client must start fast and run on a
machine without the analysis stack.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import email.utils
import fnmatch
import hashlib
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_PATTERNS = (
    "*.wav",
    "*.wave",
    "*.flac",
    "*.aif",
    "*.aiff",
    "*.aifc",
    "*.ogg",
    "*.oga",
    "*.opus",
    "*.mp3",
    "*.m4a",
    "*.aac",
    "*.mp4",
    "*.webm",
    "*.caf",
    "*.w64",
)
FORMATS = ("json", "csv", "npz")
# The media type the API serves each result format as, and the job link that points at it.
RESULT_TYPES = {"json": "application/json", "csv": "text/csv", "npz": "application/zip"}
RESULT_LINKS = {"json": "result", "csv": "csv", "npz": "npz"}
MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.csv"

# Part of every Idempotency-Key: a key names "this content, analysed this way", so a future
# client that asks for a different kind of analysis must not replay today's jobs.
IDEMPOTENCY_SCOPE = "earshot.analyze"

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
# The one request before any work: a wrong --api-url fails in a second instead of after a
# minute of retries. Short, because a healthy API answers /healthz without touching anything.
PROBE_TIMEOUT_S = 5.0
FINISHED = frozenset({"succeeded", "failed", "canceled"})
PENDING = frozenset({"queued", "running"})

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# summary.csv starts with these columns, taken from the result document by dotted name.
SUMMARY_COLUMNS: dict[str, str] = {
    "duration_s": "audio.duration_s",
    "tempo_bpm": "summary.tempo.bpm",
    "key": "summary.key.tonic",
    "mode": "summary.key.mode",
    "loudness_lufs": "summary.loudness.integrated_lufs",
}
# Numeric lists up to this length (MFCC or chroma means) become numbered columns; longer ones
# are series that belong in the per-file CSV, not in a one-row-per-file table.
MAX_LIST_COLUMNS = 32
# A spreadsheet reads a cell starting with one of these as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class SubmitError(Exception):
    """Raised when the batch client cannot go on; base of this module's errors."""


class UsageError(SubmitError):
    """Raised when the command line names no input, a missing path or colliding outputs."""


class ApiProblem(SubmitError):
    """Raised when the API answers a request with a problem document that retrying won't fix."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class TransientExhausted(SubmitError):
    """Raised when a request still fails transiently after the last allowed retry."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class BatchAborted(SubmitError):
    """Raised when a failure would repeat for every file, so the whole batch stops."""


class AuthRejected(BatchAborted):
    """Raised when the API rejects the API key (401/403): every other file would fail too."""


class ServiceUnreachable(BatchAborted):
    """Raised when no connection to the API could be made after the last allowed retry."""


class NotAnEarshotApi(SubmitError):
    """Raised when ``--api-url`` answers, but not as an earshot API does (wrong host/port/path)."""


class Interrupted(SubmitError):
    """Raised inside a worker thread when the run was interrupted (Ctrl-C or SIGTERM)."""


# ---------------------------------------------------------------------------------------------
# Discovery


@dataclass(frozen=True)
class Input:
    """One file to analyse: where it is and where its outputs go (``rel`` under ``--out``)."""

    path: Path
    rel: str


@dataclass
class Discovery:
    inputs: list[Input] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rsplit("/", 1)[-1].lower()
    for pattern in patterns:
        target = rel.lower() if "/" in pattern else name
        if fnmatch.fnmatchcase(target, pattern.lower()):
            return True
    return False


def discover(
    paths: Iterable[str | Path],
    *,
    patterns: Iterable[str] = DEFAULT_PATTERNS,
    exclude: Path | None = None,
) -> Discovery:
    """Expand files and folders into inputs, each named relative to the root it was found under.

    A folder is walked recursively; its files are kept when their name matches one of
    ``patterns`` (case-insensitive), hidden files and folders are ignored, and the rest are
    listed in ``skipped``. A file named on the command line is always kept: the server decides
    by content, the extension only steers discovery. ``exclude`` (the output folder) is never
    walked, so results written inside an input folder are not sent back as inputs.
    """
    patterns = tuple(patterns)
    found = Discovery()
    owner: dict[str, Path] = {}
    excluded = exclude.resolve() if exclude is not None else None

    def add(path: Path, rel: str) -> None:
        resolved = path.resolve()
        if rel in owner:
            if owner[rel] == resolved:
                return
            raise UsageError(
                f"{owner[rel]} and {path} would both write {rel!r} under --out; "
                "submit them in separate runs or with separate --out folders"
            )
        owner[rel] = resolved
        found.inputs.append(Input(path=path, rel=rel))

    for raw in paths:
        root = Path(raw)
        if root.is_file():
            add(root, root.name)
        elif root.is_dir():
            matched: list[tuple[str, Path]] = []
            for dirpath, dirnames, filenames in os.walk(root):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".") and (here / d).resolve() != excluded
                )
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = here / name
                    rel = path.relative_to(root).as_posix()
                    if _matches(rel, patterns):
                        matched.append((rel, path))
                    else:
                        found.skipped.append(path)
            for rel, path in sorted(matched):
                add(path, rel)
        else:
            raise UsageError(f"no such file or folder: {raw}")
    return found


# ---------------------------------------------------------------------------------------------
# Files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def idempotency_key(sha256: str, *, profile: str, attempt: int = 0) -> str:
    """The Idempotency-Key of an upload: same content + profile + scope, same key.

    ``attempt`` is 0 for the first submission; ``--retry-failed`` counts it up so that a retry
    creates a new job instead of replaying the failed one, while a crash during the retry
    still replays the retry.
    """
    parts = [sha256, profile, IDEMPOTENCY_SCOPE]
    if attempt:
        parts.append(f"retry-{attempt}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` via a temporary sibling and a rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with open(tmp, mode, **text) as fh:  # type: ignore[call-overload]
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def output_paths(out: Path, rel: str, formats: Iterable[str]) -> dict[str, Path]:
    return {fmt: out / f"{rel}.{fmt}" for fmt in formats}


# ---------------------------------------------------------------------------------------------
# Manifest


class Manifest:
    """``manifest.jsonl``: one JSON record per line, appended; the latest record per path wins.

    Every append is one ``write`` of a whole line followed by fsync, so an interruption leaves
    at worst a torn last line, which loading ignores. ``compact`` rewrites the file with one
    record per path through a rename.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path.exists():
            self.records = self.load(path)

    @staticmethod
    def load(path: Path) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn by an interruption mid-write
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    records[record["path"]] = record
        return records

    def get(self, rel: str) -> dict[str, Any] | None:
        with self._lock:
            return self.records.get(rel)

    def open(self) -> None:
        # Compacting first also drops a torn last line, so appends start on a fresh line.
        self.compact()
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError("manifest is not open")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.records[record["path"]] = record

    def compact(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
            with atomic_writer(self.path) as fh:
                for rel in sorted(self.records):
                    fh.write(json.dumps(self.records[rel], sort_keys=True) + "\n")
            if self._fh is not None:
                self._fh = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


# ---------------------------------------------------------------------------------------------
# summary.csv


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar fields of a result document by dotted name; short numeric lists get numbered.

    Lists named ``*_s`` are event times (beats, onsets) and are left out whatever their length,
    so the set of columns does not depend on how long a file is.
    """
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            if (
                not key.endswith("_s")
                and 0 < len(value) <= MAX_LIST_COLUMNS
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            ):
                for i, v in enumerate(value):
                    flat[f"{name}.{i}"] = v
        elif value is None or isinstance(value, str | int | float | bool):
            flat[name] = value
    return flat


def summary_row(rel: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    flat = flatten({k: doc[k] for k in ("audio", "summary") if isinstance(doc.get(k), Mapping)})
    row: dict[str, Any] = {"path": rel}
    for column, dotted in SUMMARY_COLUMNS.items():
        row[column] = flat.pop(dotted, None)
    row.update(sorted(flat.items()))
    return row


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """One line per row, sorted by path; every text cell (header included) through csv_cell."""
    columns: list[str] = ["path", *SUMMARY_COLUMNS]
    extra = sorted({c for row in rows for c in row} - set(columns), key=_natural)
    columns.extend(extra)
    with atomic_writer(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([csv_cell(c) for c in columns])
        for row in sorted(rows, key=lambda r: r["path"]):
            writer.writerow([csv_cell(row.get(c)) for c in columns])


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    # chroma.mean.2 before chroma.mean.10
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in name.split("."))


def csv_cell(value: Any) -> str:
    """A summary.csv cell: numbers as written, text neutralised against formula injection.

    File names and server strings are untrusted: a name like ``=HYPERLINK(...)`` or
    ``@SUM(A1)`` would run as a formula when the CSV is opened in a spreadsheet. OWASP's rule:
    a text cell that starts with ``= + - @``, tab or CR gets a leading ``'``, which spreadsheets
    read as "this is text". Numbers are ours (ints and floats from the JSON document), so a
    negative number such as -14.2 stays a number.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


# ---------------------------------------------------------------------------------------------
# HTTP with retries


def backoff_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = 0.5,
    cap: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    Exponential with "equal jitter": half of ``min(cap, base * 2**attempt)`` plus a random
    share of the other half, so many clients that failed together do not come back together.
    A server's ``Retry-After`` is a floor, not a suggestion; jitter is added on top of it.
    """
    ceiling = min(cap, base * (2**attempt))
    delay = ceiling / 2 + rand() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after + rand() * base)
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds, from delta-seconds or an HTTP date; None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def problem_of(response: httpx.Response) -> tuple[str, str]:
    """The ``code`` and ``detail`` of an error response (problem+json, or a fallback)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or f"http_{response.status_code}")
        detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
        return code, detail
    return f"http_{response.status_code}", response.text.strip()[:200] or response.reason_phrase


class Api:
    """The endpoints of ``/v1/analyses`` the client uses, each retried on transient failures."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 8,
        connections: int = 4,
        stop: threading.Event | None = None,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        headers = {"User-Agent": "earshot-submit"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.client = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max(connections, 1) + 2),
        )
        self.max_retries = max_retries
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.on_retry = on_retry

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted("interrupted while waiting to retry")

    def request(
        self,
        method: str,
        url: str,
        *,
        ok: Iterable[int] = (200,),
        body: Callable[[], dict[str, Any]] | None = None,
        stream_to: Path | None = None,
        expect_type: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request, retrying connection errors, timeouts and 429/502/503/504.

        ``body`` builds fresh keyword arguments per attempt (an upload reopens its file).
        With ``stream_to`` the response body is written atomically to that path. With
        ``expect_type`` a success of another media type is an ``unexpected_content_type``
        problem, raised before anything is written.
        """
        ok = frozenset(ok)
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Interrupted("interrupted")
            extra = body() if body else {}
            retry_after: float | None = None
            reason: tuple[str, str]
            try:
                with self.client.stream(method, url, **kwargs, **extra) as response:
                    if response.status_code in ok:
                        if expect_type is not None and _media_type(response) != expect_type:
                            raise ApiProblem(
                                response.status_code,
                                "unexpected_content_type",
                                f"{method} {response.url} answered "
                                f"{_media_type(response) or 'no Content-Type'}, "
                                f"expected {expect_type}",
                            )
                        if stream_to is not None:
                            with atomic_writer(stream_to, "wb") as fh:
                                for chunk in response.iter_bytes():
                                    fh.write(chunk)
                        else:
                            response.read()
                        return response
                    response.read()
                    if response.status_code in (401, 403):
                        code, detail = problem_of(response)
                        raise AuthRejected(f"{code}: {detail} (check --api-key / EARSHOT_API_KEY)")
                    if response.status_code not in TRANSIENT_STATUS:
                        raise ApiProblem(response.status_code, *problem_of(response))
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    reason = problem_of(response)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                reason = (type(exc).__name__, str(exc) or type(exc).__name__)
                if isinstance(exc, httpx.ConnectError) and attempt >= self.max_retries:
                    # Nobody listens: every other file would wait out the same retries.
                    raise ServiceUnreachable(
                        f"cannot connect to {self.client.base_url} after {attempt + 1} "
                        f"attempts: {reason[1]}"
                    ) from exc
            finally:
                for value in extra.values():
                    _close_files(value)
            if attempt >= self.max_retries:
                raise TransientExhausted(
                    reason[0], f"{reason[1]} (gave up after {attempt + 1} attempts)"
                )
            delay = backoff_delay(attempt, retry_after=retry_after)
            if self.on_retry:
                self.on_retry(f"{method} {url}: {reason[0]}: {reason[1]}", delay)
            self._sleep(delay)
            attempt += 1

    def check(self) -> None:
        """One ``GET /healthz``, not retried: is an earshot API answering at the base URL?

        Raises ServiceUnreachable when no connection or no answer comes (the service may be
        down: exit 1, like losing it mid-batch) and NotAnEarshotApi when something else
        answers (a wrong port or path: exit 2, trying again will not help).
        """
        url = f"{str(self.client.base_url).rstrip('/')}/healthz"
        timeout = min(self.timeout, PROBE_TIMEOUT_S)
        try:
            response = self.client.get("/healthz", timeout=timeout)
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(
                f"no answer from {url} within {timeout:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.ConnectError as exc:
            raise ServiceUnreachable(
                f"cannot connect to {self.client.base_url}: {_reason(exc)}"
            ) from exc
        except httpx.TransportError as exc:
            raise NotAnEarshotApi(
                f"{url} does not answer as an HTTP server does: {_reason(exc)}"
            ) from exc
        status = f"{response.status_code} {response.reason_phrase}".strip()
        if response.status_code in TRANSIENT_STATUS or response.status_code >= 500:
            raise ServiceUnreachable(f"{url} answered {status}: the API is not available now")
        if response.status_code != 200:
            raise NotAnEarshotApi(f"{url} answered {status}, not earshot's liveness probe")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and body.get("status") == "ok"):
            snippet = response.text.strip()[:80]
            raise NotAnEarshotApi(
                f'{url} answered 200 with {snippet!r}, not earshot\'s {{"status": "ok"}}'
            )

    def submit(
        self, path: Path, *, profile: str, priority: str, key: str
    ) -> tuple[dict[str, Any], bool]:
        """Upload one file; returns the job and whether the server created it (202) or replayed."""

        def body() -> dict[str, Any]:
            fh = path.open("rb")
            return {"files": {"file": (path.name, fh, "application/octet-stream")}}

        response = self.request(
            "POST",
            "/v1/analyses",
            ok=(200, 201, 202),
            body=body,
            data={"profile": profile, "priority": priority},
            headers={"Idempotency-Key": key},
        )
        return response.json(), response.status_code != 200

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/analyses/{job_id}").json()

    def download(self, job: Mapping[str, Any], fmt: str, dest: Path) -> None:
        """Write the job's ``fmt`` result file to ``dest``; refuse a body of another type.

        The URL carries its own ``?format=``: httpx replaces a URL's whole query string with
        ``params`` (even an empty dict), which once turned every CSV and NPZ into a copy of the
        JSON document.
        """
        url = result_url(job, fmt)
        self.request("GET", url, stream_to=dest, expect_type=RESULT_TYPES[fmt])


def result_url(job: Mapping[str, Any], fmt: str) -> str:
    """The URL of a job's ``fmt`` result, with ``format=fmt`` in its own query string.

    The job's link is used when it is a path on this API; an absolute link to another origin
    is not followed (the API key goes to ``--api-url`` only), the path is built from the id.
    """
    link = (job.get("links") or {}).get(RESULT_LINKS[fmt])
    url = httpx.URL(link) if isinstance(link, str) else None
    if url is None or url.is_absolute_url or url.host or not url.path.startswith("/"):
        url = httpx.URL(f"/v1/analyses/{urllib.parse.quote(str(job['id']), safe='')}/result")
    return str(url.copy_set_param("format", fmt))


def _reason(exc: Exception) -> str:
    return str(exc).strip().rstrip(".") or type(exc).__name__


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _close_files(value: Any) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _close_files(item)
    elif isinstance(value, tuple):
        for item in value:
            if isinstance(item, io.IOBase):
                item.close()


# ---------------------------------------------------------------------------------------------
# Progress and events


class Reporter:
    """Tells the user what happens: a progress bar on a TTY, plain lines otherwise, and JSON
    Lines events on stdout with ``--json``. Thread-safe."""

    def __init__(self, *, total: int, json_lines: bool, stream: IO[str] | None = None) -> None:
        self.total = total
        self.json_lines = json_lines
        self.err = stream or sys.stderr
        self.human = self.err if json_lines else sys.stdout
        self.bar = self.err.isatty()
        self.counts = {"uploaded": 0, "succeeded": 0, "failed": 0, "skipped": 0}
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._bar_shown = False
        self._finished = False

    def event(self, kind: str, text: str | None = None, /, **data: Any) -> None:
        with self._lock:
            if kind in self.counts:
                self.counts[kind] += 1
            if self.json_lines:
                record = {"event": kind, **data}
                sys.stdout.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                sys.stdout.flush()
            if text is not None:
                # stdout and stderr share the terminal: the bar goes before any line is printed.
                self._clear_bar()
                if not self.bar or kind in ("failed", "ignored", "note", "done", "retry"):
                    self.human.write(text + "\n")
                    self.human.flush()
            if self.bar and not self._finished:
                self._draw()

    def line(self) -> str:
        c = self.counts
        finished = c["succeeded"] + c["failed"] + c["skipped"]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done_here = c["succeeded"] + c["failed"]
        rate = done_here / elapsed
        remaining = self.total - finished
        eta = _clock(remaining / rate) if rate > 0 and remaining > 0 else "--:--"
        width = 20
        filled = int(width * finished / self.total) if self.total else width
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} "
            f"uploaded {c['uploaded']} analysed {c['succeeded']} failed {c['failed']} "
            f"skipped {c['skipped']}  {rate * 60:.1f} files/min  ETA {eta}"
        )

    def tick(self) -> None:
        if self.bar and not self._finished:
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        self.err.write("\r\x1b[2K" + self.line())
        self.err.flush()
        self._bar_shown = True

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.err.write("\r\x1b[2K")
            self.err.flush()
            self._bar_shown = False

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            if self.bar and self._bar_shown:
                self.err.write("\n")
                self.err.flush()
                self._bar_shown = False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# ---------------------------------------------------------------------------------------------
# One batch


@dataclass
class Options:
    out: Path
    profile: str = "standard"
    priority: str = "batch"
    formats: tuple[str, ...] = ("json",)
    retry_failed: bool = False
    poll_interval: float = 1.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Batch:
    """Runs every input through upload → wait → download, recording each step in the manifest."""

    def __init__(self, api: Api, manifest: Manifest, reporter: Reporter, options: Options) -> None:
        self.api = api
        self.manifest = manifest
        self.reporter = reporter
        self.options = options
        self.stop = api.stop
        self.failed: set[str] = set()

    def record(self, inp: Input, facts: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path": inp.rel,
            "input": str(inp.path),
            "profile": self.options.profile,
            "job_id": None,
            "status": None,
            "error": None,
            "outputs": [],
            "attempt": 0,
            **facts,
            "updated_at": _now(),
        }
        record.update(fields)
        self.manifest.append(record)
        return record

    def process(self, inp: Input) -> str:
        """Handle one input; returns its final status for this run."""
        stat = inp.path.stat()
        sha = file_sha256(inp.path)
        facts = {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": sha}
        previous = self.manifest.get(inp.rel)
        same = bool(
            previous
            and previous.get("sha256") == sha
            and previous.get("profile") == self.options.profile
        )
        attempt = int(previous.get("attempt") or 0) if previous and same else 0
        outputs = output_paths(self.options.out, inp.rel, self.options.formats)

        job: dict[str, Any] | None = None
        if previous and same:
            status = previous.get("status")
            if status == "succeeded" and all(p.exists() for p in outputs.values()):
                self.reporter.event(
                    "skipped", f"done already: {inp.rel}", path=inp.rel, reason="done"
                )
                return "succeeded"
            if status in FINISHED - {"succeeded"} and not self.options.retry_failed:
                error = previous.get("error") or {}
                self.failed.add(inp.rel)
                self.reporter.event(
                    "failed",
                    f"failed (earlier run; --retry-failed to retry): {inp.rel}: "
                    f"{error.get('code')}: {error.get('message')}",
                    path=inp.rel,
                    job_id=previous.get("job_id"),
                    code=error.get("code"),
                    message=error.get("message"),
                    earlier=True,
                )
                return str(status)
            if status in FINISHED - {"succeeded"}:
                attempt += 1
            elif previous.get("job_id"):
                # Queued, running, or succeeded with an output gone: the job is the source.
                with contextlib.suppress(ApiProblem):
                    job = self.api.job(str(previous["job_id"]))
                    self.reporter.event(
                        "resumed",
                        f"resumed: {inp.rel} job {job['id']}",
                        path=inp.rel,
                        job_id=job["id"],
                    )

        if job is None:
            try:
                key = idempotency_key(sha, profile=self.options.profile, attempt=attempt)
                job, created = self.api.submit(
                    inp.path, profile=self.options.profile, priority=self.options.priority, key=key
                )
            except (ApiProblem, TransientExhausted) as exc:
                return self._fail(inp, facts, None, exc.code, exc.detail, attempt)
            self.reporter.event(
                "uploaded",
                f"uploaded: {inp.rel} job {job['id']}" + ("" if created else " (existing job)"),
                path=inp.rel,
                job_id=job["id"],
                created=created,
                cached=bool(job.get("cached")),
            )
        self.record(inp, facts, job_id=job["id"], status=job.get("status"), attempt=attempt)

        try:
            job = self.wait(inp, facts, job, attempt)
        except TransientExhausted as exc:
            # The job lives on and the manifest still says queued/running: the next run polls it.
            self.failed.add(inp.rel)
            self.reporter.event(
                "failed",
                f"failed: {inp.rel}: lost contact with job {job['id']}: {exc}",
                path=inp.rel,
                job_id=job["id"],
                code=exc.code,
                message=exc.detail,
            )
            return "failed"
        except ApiProblem as exc:
            return self._fail(inp, facts, job["id"], exc.code, exc.detail, attempt)
        status = job.get("status")
        if status != "succeeded":
            error = job.get("error") or {}
            return self._fail(
                inp,
                facts,
                job["id"],
                str(error.get("code") or status),
                str(error.get("message") or f"job ended {status}"),
                attempt,
                status=str(status),
            )
        try:
            for fmt, dest in outputs.items():
                self.api.download(job, fmt, dest)
        except (ApiProblem, TransientExhausted) as exc:
            return self._fail(inp, facts, job["id"], exc.code, exc.detail, attempt)
        self.record(
            inp,
            facts,
            job_id=job["id"],
            status="succeeded",
            attempt=attempt,
            outputs=[p.relative_to(self.options.out).as_posix() for p in outputs.values()],
        )
        self.reporter.event("succeeded", f"succeeded: {inp.rel}", path=inp.rel, job_id=job["id"])
        return "succeeded"

    def wait(
        self, inp: Input, facts: Mapping[str, Any], job: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        status = job.get("status")
        while job.get("status") not in FINISHED:
            if self.stop.wait(self.options.poll_interval):
                raise Interrupted("interrupted while waiting for a job")
            job = self.api.job(job["id"])
            if job.get("status") != status:
                status = job.get("status")
                if status in PENDING:
                    self.record(inp, facts, job_id=job["id"], status=status, attempt=attempt)
        return job

    def _fail(
        self,
        inp: Input,
        facts: Mapping[str, Any],
        job_id: str | None,
        code: str,
        message: str,
        attempt: int,
        *,
        status: str = "failed",
    ) -> str:
        self.record(
            inp,
            facts,
            job_id=job_id,
            status=status,
            attempt=attempt,
            error={"code": code, "message": message},
        )
        self.failed.add(inp.rel)
        self.reporter.event(
            "failed",
            f"failed: {inp.rel}: {code}: {message}",
            path=inp.rel,
            job_id=job_id,
            code=code,
            message=message,
        )
        return status


def build_summary(out: Path, manifest: Manifest) -> int:
    """Write summary.csv from every succeeded record's result document; returns the row count."""
    rows = []
    for rel, record in sorted(manifest.records.items()):
        if record.get("status") != "succeeded":
            continue
        doc_path = out / f"{rel}.json"
        try:
            doc = json.loads(doc_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            rows.append(summary_row(rel, doc))
    write_summary(out / SUMMARY_NAME, rows)
    return len(rows)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM end a run the same way: workers stop, the manifest is saved, exit 130.

    SIGINT gets Python's handler back explicitly: a shell starts background jobs with SIGINT
    ignored, and a batch run in the background must still stop cleanly when told to.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, handler),
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def check_api_url(url: str) -> None:
    """Raise UsageError unless ``url`` is an http(s) URL with a host (and a valid port)."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except httpx.InvalidURL as exc:
        raise UsageError(f"--api-url {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"--api-url {url!r} is not an http:// or https:// URL with a host")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--api-url {url!r} has port {port}, outside 1-65535")


def probe_api(command: str, args: argparse.Namespace) -> int | None:
    """Check ``--api-url`` before any work; print why it is unusable and return the exit code.

    None when an earshot API answers. Exit 2 for a malformed URL or something that is not an
    earshot API, 1 when nothing answers (the documented code for an unreachable API).
    """
    try:
        check_api_url(args.api_url)
        with Api(args.api_url, api_key=args.api_key, timeout=args.timeout) as api:
            api.check()
    except UsageError as exc:
        print(f"earshot {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServiceUnreachable as exc:
        print(
            f"earshot {command}: error: {exc}; is the service running, and is --api-url right?",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except NotAnEarshotApi as exc:
        print(
            f"earshot {command}: error: {exc}; --api-url must be the base URL of an earshot "
            f"API, e.g. {DEFAULT_API_URL}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return None


def run_submit(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        formats = parse_formats(args.format)
        found = discover(args.paths, patterns=args.pattern or DEFAULT_PATTERNS, exclude=out)
    except UsageError as exc:
        print(f"earshot submit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not found.inputs:
        print("earshot submit: error: no audio files found in the given paths", file=sys.stderr)
        return EXIT_USAGE
    # Before --out is created or anything is sent: a wrong URL costs a second, not a minute.
    if (code := probe_api("submit", args)) is not None:
        return code

    out.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(total=len(found.inputs), json_lines=args.json)
    for path in found.skipped:
        reporter.event(
            "ignored",
            f"ignored, not audio by extension: {path}",
            path=str(path),
            reason="extension",
        )
    manifest = Manifest(out / MANIFEST_NAME)
    manifest.open()
    stop = threading.Event()
    options = Options(
        out=out,
        profile=args.profile,
        priority=args.priority,
        formats=formats,
        retry_failed=args.retry_failed,
        poll_interval=args.poll_interval,
    )

    def on_retry(what: str, delay: float) -> None:
        reporter.event("retry", f"retrying in {delay:.1f} s: {what}", what=what, delay_s=delay)

    interrupted = False
    aborted: str | None = None
    with _interruptible():
        api = Api(
            args.api_url,
            api_key=args.api_key,
            timeout=args.timeout,
            max_retries=args.max_retries,
            connections=args.concurrency,
            stop=stop,
            on_retry=on_retry,
        )
        batch = Batch(api, manifest, reporter, options)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(args.concurrency, 1))
        try:
            futures = {pool.submit(batch.process, inp): inp for inp in found.inputs}
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(
                    pending, timeout=0.25, return_when=concurrent.futures.FIRST_COMPLETED
                )
                reporter.tick()
                for future in done:
                    error = future.exception()
                    if isinstance(error, BatchAborted):
                        aborted = str(error)
                        stop.set()
                    elif isinstance(error, Interrupted):
                        pass
                    elif error is not None:
                        inp = futures[future]
                        batch.failed.add(inp.rel)
                        reporter.event(
                            "failed",
                            f"failed: {inp.rel}: client_error: {error!r}",
                            path=inp.rel,
                            code="client_error",
                            message=repr(error),
                        )
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            reporter.event("note", "interrupted: finishing requests in flight, saving manifest")
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            api.close()
            reporter.finish()
            manifest.compact()
            manifest.close()
            rows = build_summary(out, manifest)

    succeeded = sum(
        1
        for inp in found.inputs
        if (manifest.records.get(inp.rel) or {}).get("status") == "succeeded"
    )
    failed = len(batch.failed)
    reporter.event(
        "done",
        f"{succeeded} succeeded, {failed} failed, {len(found.inputs)} files; "
        f"{rows} rows in {out / SUMMARY_NAME}",
        succeeded=succeeded,
        failed=failed,
        total=len(found.inputs),
        interrupted=interrupted,
    )
    if interrupted:
        return EXIT_INTERRUPTED
    if aborted:
        print(f"earshot submit: error: {aborted}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if succeeded == len(found.inputs) else EXIT_FAILED


def parse_formats(value: str) -> tuple[str, ...]:
    """``json,csv`` → ``("json", "csv")``; the result document (json) always comes first."""
    asked = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [part for part in asked if part not in FORMATS]
    if unknown:
        raise UsageError(f"unknown --format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return ("json", *(fmt for fmt in FORMATS[1:] if fmt in asked))


# ---------------------------------------------------------------------------------------------
# status and fetch


def run_status(args: argparse.Namespace) -> int:
    if (probed := probe_api("status", args)) is not None:
        return probed
    code = EXIT_OK
    rows: list[tuple[str, ...]] = []
    with Api(args.api_url, api_key=args.api_key, timeout=args.timeout) as api:
        for job_id in args.ids:
            try:
                job = api.job(job_id)
            except (ApiProblem, TransientExhausted, BatchAborted) as exc:
                code = EXIT_FAILED
                if args.json:
                    print(json.dumps({"id": job_id, "error": str(exc)}))
                else:
                    rows.append((job_id, "error", "", "", "", str(exc)))
                continue
            if args.json:
                print(json.dumps(job, sort_keys=True))
                continue
            progress = job.get("progress") or {}
            error = job.get("error") or {}
            rows.append(
                (
                    str(job.get("id")),
                    str(job.get("status")),
                    f"{progress.get('stage') or ''} {progress.get('percent') or 0:.0f}%".strip(),
                    str(job.get("profile") or ""),
                    str(job.get("filename") or ""),
                    f"{error.get('code')}: {error.get('message')}" if error else "",
                )
            )
    if rows:
        header = ("ID", "STATUS", "PROGRESS", "PROFILE", "FILE", "ERROR")
        table = [header, *rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return code


def run_fetch(args: argparse.Namespace) -> int:
    try:
        formats = parse_formats(args.format)
    except UsageError as exc:
        print(f"earshot fetch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if (probed := probe_api("fetch", args)) is not None:
        return probed
    out = Path(args.out)
    code = EXIT_OK
    with Api(args.api_url, api_key=args.api_key, timeout=args.timeout) as api:
        for job_id in args.ids:
            try:
                job = api.job(job_id)
                if job.get("status") != "succeeded":
                    error = job.get("error") or {}
                    detail = f" ({error.get('code')}: {error.get('message')})" if error else ""
                    print(f"{job_id}: not fetched, job is {job.get('status')}{detail}")
                    code = EXIT_FAILED
                    continue
                for fmt, dest in output_paths(out, job_id, formats).items():
                    api.download(job, fmt, dest)
                    print(f"{job_id}: {dest}")
            except (ApiProblem, TransientExhausted, BatchAborted) as exc:
                print(f"{job_id}: {exc}", file=sys.stderr)
                code = EXIT_FAILED
    return code


# ---------------------------------------------------------------------------------------------
# Command line


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        default=os.environ.get("EARSHOT_API_URL", DEFAULT_API_URL),
        help="base URL of the API (default: $EARSHOT_API_URL or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EARSHOT_API_KEY"),
        help="API key sent as a Bearer token (default: $EARSHOT_API_KEY)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds one HTTP request may take before it counts as failed and is retried "
        "(default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON Lines on stdout")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "submit":
        parser.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
        parser.add_argument("--out", required=True, help="folder for results and the manifest")
        parser.add_argument(
            "--pattern",
            action="append",
            metavar="GLOB",
            help="file name glob to pick from folders, repeatable (default: common audio "
            "extensions); a glob with '/' matches the path relative to the folder",
        )
        parser.add_argument("--profile", default="standard", help="analysis profile")
        parser.add_argument(
            "--priority",
            choices=("interactive", "batch"),
            default="batch",
            help="queue to use (default: %(default)s)",
        )
        parser.add_argument(
            "--concurrency", type=int, default=4, help="files in flight (default: %(default)s)"
        )
        parser.add_argument(
            "--format",
            default="json",
            help="result files to download per input, comma-separated from json,csv,npz "
            "(json is always written)",
        )
        parser.add_argument(
            "--retry-failed", action="store_true", help="resubmit files that failed before"
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=1.0,
            help="seconds between job status checks (default: %(default)s)",
        )
        parser.add_argument(
            "--max-retries",
            type=int,
            default=8,
            help="retries of one request on transient errors (default: %(default)s)",
        )
    else:
        parser.add_argument("ids", nargs="+", metavar="ID", help="job ids")
        if name == "fetch":
            parser.add_argument("--out", required=True, help="folder for the result files")
            parser.add_argument(
                "--format", default="json", help="comma-separated from json,csv,npz"
            )
    _add_common(parser)


def run(name: str, args: argparse.Namespace) -> int:
    if name == "submit":
        return run_submit(args)
    if name == "status":
        return run_status(args)
    return run_fetch(args)
