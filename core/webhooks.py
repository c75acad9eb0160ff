"""What the API and the workers share about webhooks: the callback URL rule and the record.

A callback must never turn the service into a probe of its own network. The URL is checked at
upload (``check_callback_url``) and again before every attempt (``tasks.webhooks``): its host
must resolve only to public addresses, unless ``EARSHOT_WEBHOOK_ALLOW`` names it. The job
records only a coarse outcome of each attempt (``deliveries``): delivered, failed or refused,
and the status class of an answer; never the network error, the port's behaviour or a duration.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.errors import CallbackRefused, ConfigurationError
from core.jobs import Job

# Where a job's delivery attempts are recorded (``Job.extra``).
EXTRA_KEY = "webhook_deliveries"
MAX_URL_LENGTH = 2048
# getaddrinfo has no timeout of its own (the resolver's default is 5 s x 2).
RESOLVE_TIMEOUT_S = 2.0

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
