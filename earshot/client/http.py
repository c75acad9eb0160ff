"""The retrying HTTP transport of the client and how it reads the API's errors.

Only httpx and the standard library: the client must start fast and run on a machine without
the analysis stack.
"""

from __future__ import annotations

import email.utils
import io
import random
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from earshot.client.errors import (
    ApiProblem,
    AuthRejected,
    Interrupted,
    NotAnEarshotApi,
    ServiceUnreachable,
    TransientExhausted,
)
from earshot.client.files import atomic_writer

USER_AGENT = "earshot-client"
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
# The one request before any work: a wrong --api-url fails in a second instead of after a
# minute of retries. Short, because a healthy API answers /healthz without touching anything.
PROBE_TIMEOUT_S = 5.0


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
    ceiling: float = min(cap, base * (2**attempt))
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


class Transport:
    """HTTP to one earshot API: every request retried on transient failures, one health probe.

    ``stop`` ends any wait between retries (``Interrupted``); ``on_retry`` hears of each retry
    with its reason and delay before the wait.
    """

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
        user_agent: str = USER_AGENT,
    ) -> None:
        headers = {"User-Agent": user_agent}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(
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
        self.http.close()

    def __enter__(self) -> Transport:
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
                with self.http.stream(method, url, **kwargs, **extra) as response:
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
                        f"cannot connect to {self.http.base_url} after {attempt + 1} "
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
        url = f"{str(self.http.base_url).rstrip('/')}/healthz"
        timeout = min(self.timeout, PROBE_TIMEOUT_S)
        try:
            response = self.http.get("/healthz", timeout=timeout)
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(
                f"no answer from {url} within {timeout:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.ConnectError as exc:
            raise ServiceUnreachable(
                f"cannot connect to {self.http.base_url}: {_reason(exc)}"
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


def _reason(exc: Exception) -> str:
    return str(exc).strip().rstrip(".") or type(exc).__name__


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("Content-Type", "")
    return content_type.split(";", 1)[0].strip().lower()


def _close_files(value: Any) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _close_files(item)
    elif isinstance(value, tuple):
        for item in value:
            if isinstance(item, io.IOBase):
                item.close()
