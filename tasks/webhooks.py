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
import ipaddress
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from celery import Task, shared_task

from tasks.errors import CallbackRefused, ConfigurationError, JobNotFound
from tasks.jobs import Job
from tasks.names import WEBHOOK_TASK, JobStatus, Queue
from tasks.runtime import Runtime

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
EXTRA_KEY = "webhook_deliveries"
# Attempts kept on the job: enough to debug a receiver, bounded so the row stays small.
MAX_RECORDED = 20
MAX_URL_LENGTH = 2048
# One attempt, from resolving the host to the status line, ends within ATTEMPT_BUDGET_S even if
# the receiver trickles bytes: a hung receiver holds a delivery thread for seconds, not minutes.
RESOLVE_TIMEOUT_S = 2.0
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

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> every address the host resolves to; raises OSError when it does not resolve.
type Resolver = Callable[[str, int], list[IPAddress]]

# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
HOST_PATTERN = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?")


class Outcome(StrEnum):
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # no answer, or not 2xx: retried
    REFUSED = "refused"  # the URL or the address it resolves to is not allowed: not retried


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


@dataclass(frozen=True)
class Target:
    """A checked callback URL, taken apart into what to connect to and what to send."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    path: str  # path and query, as sent on the request line
    host_header: str

    @property
    def is_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


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


def parse_callback_url(url: str) -> Target:
    """Take ``url`` apart, or raise CallbackRefused naming the rule it breaks.

    Only ASCII without spaces or control characters (a CR/LF would split the request), http
    or https, a host, no user name or password, a port in 1-65535, at most 2048 characters;
    and two parsers (urllib's and httpx's) must agree on the host and port, so no trick
    spelling reaches one host while being checked as another.
    """
    refuse = f"callback_url {url[:100]!r}"
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(
            f"{refuse} is {len(url)} characters long; the limit is {MAX_URL_LENGTH}"
        )
    for i, char in enumerate(url):
        if not 0x21 <= ord(char) <= 0x7E:
            raise CallbackRefused(
                f"{refuse} contains {char!r} at position {i}: spaces, control characters "
                "(CR, LF, tab …) and non-ASCII characters are not allowed; percent-encode "
                "them in the path and write an international host name in punycode"
            )
    if "\\" in url:
        raise CallbackRefused(f"{refuse} contains a backslash, which parsers read differently")
    try:
        parts = urlsplit(url)
        port = parts.port
        other = httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:  # a port out of range, 0177.0.0.1 …
        raise CallbackRefused(f"{refuse} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused(f"{refuse} must use http or https, not {parts.scheme!r}")
    if "@" in parts.netloc:
        raise CallbackRefused(f"{refuse} must not carry a user name or password")
    host = parts.hostname or ""
    if not host:
        raise CallbackRefused(f"{refuse} has no host")
    literal_v6 = parts.netloc.split("]")[0].startswith("[")
    if literal_v6:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CallbackRefused(f"{refuse} has an invalid IPv6 address") from None
    elif not HOST_PATTERN.fullmatch(host):
        raise CallbackRefused(f"{refuse} has an invalid host {host!r}")
    if port == 0:
        raise CallbackRefused(f"{refuse} has port 0; a port is 1-65535")
    effective_port = port or (443 if parts.scheme == "https" else 80)
    if other.host.lower() != host or (other.port or effective_port) != effective_port:
        raise CallbackRefused(f"{refuse} is read as different hosts by different URL parsers")
    netloc_host = f"[{host}]" if literal_v6 else host
    return Target(
        scheme=parts.scheme,
        host=host,
        port=effective_port,
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        host_header=netloc_host if port is None else f"{netloc_host}:{port}",
    )


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to ``address`` (e.g. ``"loopback"``); None if it may.

    Forms that carry an IPv4 address inside an IPv6 one are judged by the IPv4 address they
    reach. Anything not globally routable is refused, including the shared address space.
    """
    inner = embedded_ipv4(address)
    if inner is not None:
        why = address_refusal(inner)
        return None if why is None else f"{why} (as {address})"
    for prop, why in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(address, prop):
            return why
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks a webhook may reach although they are not public
    (``EARSHOT_WEBHOOK_ALLOW``): a receiver on the operator's own network."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows(self, host: str, address: IPAddress) -> bool:
        if host.rstrip(".") in self.hosts:
            return True
        candidates = [address, *filter(None, [embedded_ipv4(address)])]
        return any(
            a in net for a in candidates for net in self.networks if a.version == net.version
        )


@lru_cache(maxsize=8)
def allowlist(text: str | None) -> Allowlist:
    """Parse ``EARSHOT_WEBHOOK_ALLOW``: comma-separated host names, addresses and CIDRs."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in (text or "").split(","):
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if not HOST_PATTERN.fullmatch(entry):
            raise ConfigurationError(
                f"EARSHOT_WEBHOOK_ALLOW entry {entry!r} is neither a host name nor an address "
                "or CIDR (e.g. hooks.internal, 10.0.0.5, 10.1.0.0/16)"
            )
        hosts.add(entry)
    return Allowlist(hosts=frozenset(hosts), networks=tuple(networks))


# Resolution runs on a few threads of its own so that a lookup can be given up after
# RESOLVE_TIMEOUT_S (getaddrinfo itself has no timeout; the resolver's default is 5 s x 2).
_dns = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, as the HTTP client would resolve it.

    ``socket.getaddrinfo`` is what a connect uses, and it accepts spellings that
    ``ipaddress`` rejects (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1``), so the
    check sees exactly the addresses a connection could reach. Raises OSError when the host
    does not resolve in time.
    """
    future = _dns.submit(
        socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    try:
        infos = future.result(timeout=RESOLVE_TIMEOUT_S)
    except FutureTimeout:
        future.cancel()  # if still waiting for a thread, it never runs
        raise TimeoutError(f"resolving {host!r} took over {RESOLVE_TIMEOUT_S:.0f} s") from None
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise OSError(f"{host!r} has no IPv4 or IPv6 address")
    return addresses


def check_addresses(target: Target, addresses: Iterable[IPAddress], allow: Allowlist) -> None:
    """Raise CallbackRefused unless every address of ``target`` may be reached.

    Every address, not just one: a name with one public and one private record would
    otherwise reach the private one whenever the public one fails to connect.
    """
    for address in addresses:
        if allow.allows(target.host, address):
            continue
        why = address_refusal(address)
        if why is not None:
            # A literal is echoed; what a name resolves to is not (it would let a caller read
            # the service's internal DNS).
            named = f"{address} is" if target.is_literal else f"host {target.host!r} resolves to"
            raise CallbackRefused(
                f"callback_url {named} a {why} address; webhooks reach public addresses only "
                "(EARSHOT_WEBHOOK_ALLOW lists exceptions)"
            )


def check_callback_url(url: str, *, allow: Allowlist, resolve: Resolver | None = None) -> str:
    """``url`` if a job may be given it as its callback; else CallbackRefused with the rule.

    A host that does not resolve now is accepted: DNS may be briefly down or the receiver not
    yet published, and every delivery checks the address again before it connects.
    """
    target = parse_callback_url(url)
    try:
        addresses = (resolve or resolve_host)(target.host, target.port)
    except OSError:
        return url
    check_addresses(target, addresses, allow)
    return url


def deliveries(job: Job) -> list[dict[str, Any]]:
    """The attempts recorded on ``job``, oldest first, in their coarse form.

    Records written before outcomes were coarse (``status_code``, ``error``) are shown as
    outcome and status class too: their error text could describe the service's network.
    """
    recorded = job.extra.get(EXTRA_KEY, [])
    if not isinstance(recorded, list):
        return []
    coarse = []
    for item in recorded:
        if not isinstance(item, dict):
            continue
        if "outcome" in item:
            coarse.append({k: item.get(k) for k in ("attempt", "at", "outcome", "status_class")})
            continue
        status = item.get("status_code")
        ok = isinstance(status, int) and 200 <= status < 300
        coarse.append(
            {
                "attempt": item.get("attempt"),
                "at": item.get("at"),
                "outcome": Outcome.DELIVERED.value if ok else Outcome.FAILED.value,
                "status_class": status_class(status) if isinstance(status, int) else None,
            }
        )
    return coarse


def status_class(status: int) -> str:
    return f"{status // 100}xx"


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


def enqueue_webhook(runtime: Runtime, job: Job) -> None:
    """Queue the notification that ``job`` ended, if it has a callback URL.

    Never raises: a notification that cannot be queued is logged, and the job is unaffected.
    """
    if not job.callback_url:
        return
    try:
        runtime.celery.send_task(
            WEBHOOK_TASK, args=[job.id], queue=Queue.WEBHOOK.value, retry=False
        )
    except Exception as exc:  # kombu raises many types for "broker unreachable"
        log.warning("webhook of job %s not queued: %s", job.id, exc)


# max_retries=None: run_webhook bounds attempts and waits itself, because a wait for a busy
# host must not count as an attempt.
@shared_task(name=WEBHOOK_TASK, bind=True, ignore_result=True, acks_late=True, max_retries=None)
def webhook(self: Task, job_id: str, attempt: int = 1) -> bool:
    """POST the end of job ``job_id`` to its callback URL, retrying with backoff."""
    from tasks.analyze import runtime_of

    runtime = runtime_of(self)
    retries = int(self.request.retries or 0)
    step = run_webhook(runtime, job_id, attempt=attempt, deferrals=retries - (attempt - 1))
    if step.retry_in_s is None:
        return step.delivered
    raise self.retry(args=[job_id], kwargs={"attempt": step.attempt}, countdown=step.retry_in_s)
