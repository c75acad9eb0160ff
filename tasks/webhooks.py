"""Webhooks: tell a job's ``callback_url`` that the job ended, signed per Standard Webhooks.

Each notification is one POST of a JSON body with the headers ``webhook-id`` (the same on
every attempt, so a receiver can drop duplicates), ``webhook-timestamp`` (seconds since the
epoch, of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with ``EARSHOT_WEBHOOK_SECRET`` (``whsec_<base64 key>``).
Delivery is at least once: a non-2xx answer or a network error is retried with exponential
backoff, and every attempt is recorded on the job (``extra["webhook_deliveries"]``).

A callback must never turn the service into a probe of its own network. The URL is checked at
upload (``check_callback_url``) and again before every attempt: its host must resolve only to
public addresses, unless ``EARSHOT_WEBHOOK_ALLOW`` names it. The attempt then connects to an
address that was checked (a DNS answer that changes in between cannot redirect it), follows
no redirect, and the job records only a coarse outcome (delivered, failed or refused, and the
status class of an answer): never the network error, the port's behaviour or a duration.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpcore
from celery import Task, shared_task

from core.errors import CallbackRefused, ConfigurationError, JobNotFound
from core.jobs import Job
from core.names import WEBHOOK_TASK, JobStatus
from core.runtime import Runtime
from core.webhooks import (
    EXTRA_KEY,
    IPAddress,
    Outcome,
    Resolver,
    Target,
    allowlist,
    check_addresses,
    parse_callback_url,
    resolve_host,
    status_class,
)
from tasks.steps import runtime_of

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# Attempts kept on the job: enough to debug a receiver, bounded so the row stays small.
MAX_RECORDED = 20
# One attempt, from resolving the host to the status line, ends within ATTEMPT_BUDGET_S even if
# the receiver trickles bytes: a hung receiver holds a delivery thread for seconds, not minutes.
CONNECT_TIMEOUT_S = 3.0
ATTEMPT_BUDGET_S = 5.0
# Retries after the first attempt, 5 s apart doubling up to an hour: about 21 minutes in all
# for the default 8, long enough to ride out a receiver's deploy or restart.
MAX_RETRIES = 8
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 3600.0
# A delivery whose receiver host already has EARSHOT_WEBHOOK_PER_HOST deliveries in flight in
# this pool waits this long (plus up to as much again, so they do not all return at once) and
# tries again, without spending one of its attempts; after MAX_DEFERRALS waits (about 1.5 hours
# at the mean) it is given up.
BUSY_RETRY_S = 5.0
MAX_DEFERRALS = 720
USER_AGENT = "earshot-webhooks/1"

EVENT_OF_STATUS = {
    JobStatus.SUCCEEDED: "analysis.succeeded",
    JobStatus.FAILED: "analysis.failed",
    JobStatus.CANCELED: "analysis.canceled",
}


@dataclass(frozen=True)
class Attempt:
    """The coarse outcome of one POST to a receiver, as recorded on the job."""

    attempt: int
    at: str
    outcome: Outcome
    status_class: str | None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional, as in the spec)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigurationError(
            "EARSHOT_WEBHOOK_SECRET must be `whsec_` followed by a base64 key, e.g. "
            "whsec_" + base64.b64encode(b"\x00" * 24).decode()
        )
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def message_id(job: Job) -> str:
    # A job ends once, so one message per job: retries reuse the id, receivers dedupe on it.
    return f"msg_{job.id}"


def payload(job: Job) -> dict[str, Any]:
    """The body of the notification that ``job`` ended (Standard Webhooks' type/timestamp/data)."""
    own = f"/v1/analyses/{job.id}"
    done = job.status is JobStatus.SUCCEEDED
    ended = job.finished_at or job.updated_at
    return {
        "type": EVENT_OF_STATUS.get(job.status, f"analysis.{job.status.value}"),
        "timestamp": ended.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "id": job.id,
            "status": job.status.value,
            "filename": job.filename,
            "sha256": job.sha256,
            "profile": job.profile,
            "cached": job.cached,
            "error": (
                {"code": job.error_code, "message": job.error_message or ""}
                if job.status is JobStatus.FAILED and job.error_code
                else None
            ),
            "links": {
                "self": own,
                "result": f"{own}/result" if done else None,
                "waveform": f"{own}/waveform.json" if done else None,
                "spectrogram": f"{own}/spectrogram.png" if done else None,
            },
        },
    }


def record(runtime: Runtime, job_id: str, attempt: Attempt) -> None:
    # Read-modify-write of the extra column is safe here because one job has one notification,
    # and its attempts run one after another (a retry is scheduled only after this returns).
    job = runtime.jobs.get(job_id)
    recorded = job.extra.get(EXTRA_KEY, [])
    history = [*(recorded if isinstance(recorded, list) else []), asdict(attempt)]
    runtime.jobs.set_extra(job_id, {**job.extra, EXTRA_KEY: history[-MAX_RECORDED:]})


def remaining_s(deadline: float, timeout: float | None, expired: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired(f"the attempt's {ATTEMPT_BUDGET_S:.0f} s budget is spent")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by ``deadline``: a receiver trickling a
    byte now and then cannot stretch an attempt past its budget."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = remaining_s(self.deadline, timeout, httpcore.ReadTimeout)
        return self.inner.read(max_bytes, left)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, remaining_s(self.deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = remaining_s(self.deadline, timeout, httpcore.ConnectTimeout)
        # server_hostname is the URL's host name: the certificate is checked against the name
        # the user gave, although the connection went to an address chosen here.
        return DeadlineStream(
            self.inner.start_tls(ssl_context, server_hostname, left), self.deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the vetted ``addresses``, whatever host name the request carries, so
    a DNS answer that changed since the check (rebinding) is never used."""

    def __init__(self, addresses: list[IPAddress], deadline: float) -> None:
        self.addresses = addresses
        self.deadline = deadline
        self.sync = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception = httpcore.ConnectError(f"{host!r} has no vetted address")
        for address in self.addresses:
            try:
                stream = self.sync.connect_tcp(
                    str(address),
                    port,
                    timeout=remaining_s(self.deadline, timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return DeadlineStream(stream, self.deadline)
        raise error

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def post(
    target: Target,
    addresses: list[IPAddress],
    body: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
) -> int:
    """POST once to the first of ``addresses`` that accepts; the status code of the answer.

    The answer's body is never read. Redirects are not followed: a signed body must reach the
    URL the user gave. Raises an httpcore error (or OSError) when there is no answer in time.
    """
    backend = PinnedBackend(addresses, deadline)
    url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode(),
        port=target.port,
        target=target.path.encode(),
    )
    sent = [
        ("host", target.host_header),
        ("content-length", str(len(body))),
        *headers.items(),
    ]
    timeouts = {
        "connect": CONNECT_TIMEOUT_S,
        "read": ATTEMPT_BUDGET_S,
        "write": ATTEMPT_BUDGET_S,
        "pool": ATTEMPT_BUDGET_S,
    }
    with (
        httpcore.ConnectionPool(network_backend=backend, max_connections=1, retries=0) as pool,
        pool.stream(
            "POST", url, headers=sent, content=body, extensions={"timeout": timeouts}
        ) as response,
    ):
        return int(response.status)


def deliver(
    runtime: Runtime, job: Job, *, attempt: int, resolve: Resolver | None = None
) -> Attempt:
    """Send the notification of the finished ``job`` once and record the attempt's outcome."""
    started = time.monotonic()
    at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = json.dumps(payload(job), ensure_ascii=False, separators=(",", ":")).encode()
    msg_id = message_id(job)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    secret = runtime.settings.webhook_secret
    if secret:
        headers["webhook-signature"] = signature(secret_key(secret), msg_id, timestamp, body)
    outcome, klass = Outcome.FAILED, None
    # The details go to the worker's log, for the operator; the job gets the coarse outcome.
    try:
        target = parse_callback_url(job.callback_url or "")
        addresses = (resolve or resolve_host)(target.host, target.port)
        check_addresses(target, addresses, allowlist(runtime.settings.webhook_allow))
        status = post(target, addresses, body, headers, deadline=started + ATTEMPT_BUDGET_S)
    except CallbackRefused as exc:
        outcome = Outcome.REFUSED
        log.warning("webhook of job %s refused: %s", job.id, exc)
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        log.info("webhook of job %s: no answer (%s: %s)", job.id, type(exc).__name__, exc)
    except (httpcore.UnsupportedProtocol, OSError) as exc:
        log.info("webhook of job %s: failed (%s: %s)", job.id, type(exc).__name__, exc)
    except Exception:
        # Still an attempt: recorded and retried like any failure, never a task that dies
        # without a trace on the job.
        log.exception("webhook of job %s: unexpected error", job.id)
    else:
        klass = status_class(status)
        if 200 <= status < 300:
            outcome = Outcome.DELIVERED
        else:
            log.info("webhook of job %s: receiver answered %d", job.id, status)
    result = Attempt(attempt=attempt, at=at, outcome=outcome, status_class=klass)
    record(runtime, job.id, result)
    return result


def backoff_s(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 5, 10, 20 … capped at an hour."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**retries))


class HostSlots:
    """At most ``limit`` deliveries in flight per receiver host in this process: a receiver
    that hangs holds a few threads of the webhook pool, never all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, host: str, *, limit: int) -> Iterator[bool]:
        """Take a slot for ``host`` if one is free (never waits); yields whether it did."""
        with self._lock:
            taken = self._busy.get(host, 0) < limit
            if taken:
                self._busy[host] = self._busy.get(host, 0) + 1
        try:
            yield taken
        finally:
            if taken:
                with self._lock:
                    self._busy[host] -= 1
                    if not self._busy[host]:
                        del self._busy[host]


host_slots = HostSlots()


@dataclass(frozen=True)
class Step:
    """What the webhook task does after one run: stop, or run again in ``retry_in_s`` as
    attempt number ``attempt`` (the same number when it only waited for a busy host)."""

    delivered: bool
    retry_in_s: float | None = None
    attempt: int = 1


def run_webhook(
    runtime: Runtime,
    job_id: str,
    *,
    attempt: int,
    deferrals: int,
    slots: HostSlots = host_slots,
    resolve: Resolver | None = None,
) -> Step:
    """One run of the webhook task: deliver now, or wait for a slot of the receiver's host."""
    try:
        job = runtime.jobs.get(job_id)
    except JobNotFound:
        log.warning("webhook for job %s dropped: no such job", job_id)
        return Step(delivered=False)
    if not job.callback_url or not job.status.finished:
        return Step(delivered=False)
    try:
        host = urlsplit(job.callback_url).hostname or ""
    except ValueError:  # a malformed URL stored before the upload checked it: refused below
        host = ""
    with slots.hold(host, limit=runtime.settings.webhook_per_host) as held:
        if not held:
            if deferrals >= MAX_DEFERRALS:
                log.warning("webhook of job %s given up: host %s stayed busy", job_id, host)
                return Step(delivered=False)
            return Step(
                delivered=False,
                retry_in_s=BUSY_RETRY_S * (1 + random.random()),
                attempt=attempt,
            )
        started = time.monotonic()
        outcome = deliver(runtime, job, attempt=attempt, resolve=resolve)
    if outcome.ok:
        return Step(delivered=True)
    if outcome.outcome is Outcome.REFUSED:
        return Step(delivered=False)
    if attempt > MAX_RETRIES:
        log.warning("webhook of job %s given up after %d attempts", job_id, attempt)
        return Step(delivered=False)
    # Counted from the attempt's start, so the next attempt's time does not tell how long
    # this one took (a timeout and a refused connection look alike on the record).
    wait = max(0.0, backoff_s(attempt - 1) - (time.monotonic() - started))
    return Step(delivered=False, retry_in_s=wait, attempt=attempt + 1)


# max_retries=None: run_webhook bounds attempts and waits itself, because a wait for a busy
# host must not count as an attempt.
@shared_task(name=WEBHOOK_TASK, bind=True, ignore_result=True, acks_late=True, max_retries=None)
def webhook(self: Task, job_id: str, attempt: int = 1) -> bool:
    """POST the end of job ``job_id`` to its callback URL, retrying with backoff."""
    runtime = runtime_of(self)
    retries = int(self.request.retries or 0)
    step = run_webhook(runtime, job_id, attempt=attempt, deferrals=retries - (attempt - 1))
    if step.retry_in_s is None:
        return step.delivered
    raise self.retry(args=[job_id], kwargs={"attempt": step.attempt}, countdown=step.retry_in_s)
