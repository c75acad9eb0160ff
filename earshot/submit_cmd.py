"""``earshot submit``, ``status`` and ``fetch``: the batch client of the HTTP API.

``submit`` sends files and folders to the service, waits for the analyses and writes one result
document per input under ``--out``, plus ``summary.csv`` and ``manifest.jsonl``. The manifest
makes a run resumable: a second run skips what is done, polls what is still queued or running
and re-sends nothing, because every upload carries an ``Idempotency-Key`` derived from the
file's content.

This module is the command line (arguments, exit codes, the lines printed); the work is done
by earshot/batch/ on top of :class:`earshot.client.Client`. Only httpx and the standard library
are imported: the client must start fast and run on a machine without the analysis stack.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

# The profile names only: analysis.profiles imports nothing beyond the standard library.
from analysis.profiles import DEFAULT_PROFILE, PROFILES
from earshot.batch.discover import DEFAULT_PATTERNS, discover, output_paths
from earshot.batch.engine import Batch, Options
from earshot.batch.manifest import MANIFEST_NAME, Manifest
from earshot.batch.progress import Reporter
from earshot.batch.summary import SUMMARY_NAME, build_summary
from earshot.client import (
    DEFAULT_API_URL,
    FORMATS,
    ApiProblem,
    BatchAborted,
    Client,
    Interrupted,
    NotAnEarshotApi,
    ServiceUnreachable,
    TransientExhausted,
    UsageError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# What the API's logs show as the client of every request ``earshot submit`` makes.
USER_AGENT = "earshot-submit"


def _client(args: argparse.Namespace, **options: Any) -> Client:
    return Client(
        args.api_url,
        api_key=args.api_key,
        timeout=args.timeout,
        user_agent=USER_AGENT,
        **options,
    )


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


def cold_queues(api_url: str, *, timeout: float) -> set[str]:
    """Queues the API reports without a warm worker (``/readyz``'s ``workers``); empty when it
    cannot tell. ``/readyz`` needs no key."""
    try:
        answer = httpx.get(f"{api_url.rstrip('/')}/readyz", timeout=timeout)
        workers = answer.json().get("workers") or {}
    except (httpx.HTTPError, ValueError, AttributeError):
        return set()
    return {str(queue) for queue, warm in workers.items() if not warm}


def probe_api(command: str, args: argparse.Namespace) -> int | None:
    """Check ``--api-url`` before any work; print why it is unusable and return the exit code.

    None when an earshot API answers. Exit 2 for a malformed URL or something that is not an
    earshot API, 1 when nothing answers (the documented code for an unreachable API).
    """
    try:
        check_api_url(args.api_url)
        with _client(args) as client:
            client.check()
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
    queue = f"earshot.{args.priority}"
    if queue in cold_queues(args.api_url, timeout=min(args.timeout, 5.0)):
        reporter.event(
            "note",
            f"workers starting: no worker on {queue} has warmed up yet; files are sent and "
            "wait in the queue until one has",
            queue=queue,
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
        client = _client(
            args,
            max_retries=args.max_retries,
            connections=args.concurrency,
            stop=stop,
            on_retry=on_retry,
        )
        batch = Batch(client, manifest, reporter, options)
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
            client.close()
            reporter.finish()
            manifest.compact()
            manifest.close()
            rows = build_summary(out, manifest, (inp.rel for inp in found.inputs))

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


def run_status(args: argparse.Namespace) -> int:
    if (probed := probe_api("status", args)) is not None:
        return probed
    code = EXIT_OK
    rows: list[tuple[str, ...]] = []
    with _client(args) as client:
        for job_id in args.ids:
            try:
                job = client.get(job_id)
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
    with _client(args) as client:
        for job_id in args.ids:
            try:
                job = client.get(job_id)
                if job.get("status") != "succeeded":
                    error = job.get("error") or {}
                    detail = f" ({error.get('code')}: {error.get('message')})" if error else ""
                    print(f"{job_id}: not fetched, job is {job.get('status')}{detail}")
                    code = EXIT_FAILED
                    continue
                for fmt, dest in output_paths(out, job_id, formats).items():
                    client.download(job, fmt, dest)
                    print(f"{job_id}: {dest}")
            except (ApiProblem, TransientExhausted, BatchAborted) as exc:
                print(f"{job_id}: {exc}", file=sys.stderr)
                code = EXIT_FAILED
    return code


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
        parser.add_argument(
            "--profile",
            default=DEFAULT_PROFILE,
            choices=PROFILES,
            help="analysis profile (default: %(default)s; docs/result.md, Profiles)",
        )
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
            help="result files to download per input, comma-separated from json,csv,npz,"
            "segments,audio-features,audio-analysis (docs/batch.md) "
            "(json is always written)",
        )
        parser.add_argument(
            "--retry-failed", action="store_true", help="resubmit files that failed before"
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=1.0,
            help="longest a job status request waits for a change (GET ...?wait=; default: "
            "%(default)s)",
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
                "--format",
                default="json",
                help="comma-separated from json,csv,npz,segments,audio-features,audio-analysis",
            )
    _add_common(parser)


def run(name: str, args: argparse.Namespace) -> int:
    if name == "submit":
        return run_submit(args)
    if name == "status":
        return run_status(args)
    return run_fetch(args)
