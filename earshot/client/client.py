"""``Client``: the earshot HTTP API from Python, one method per thing a user does with a job.

    from earshot.client import Client

    with Client("http://127.0.0.1:8000") as client:
        document = client.analyze("song.flac")          # upload, wait, the result document
        document["summary"]["tempo"]["bpm"]

Every request goes through :class:`~earshot.client.http.Transport`, so connection errors,
timeouts and 429/502/503/504 are retried with backoff and ``Retry-After`` is honoured. Jobs are
the API's JSON objects as plain dicts (``id``, ``status``, ``links``, ``error``, …; see
docs/api.md). ``earshot submit`` is built on this class.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import httpx

from earshot.client.errors import Interrupted, JobFailed, WaitTimeout
from earshot.client.files import file_sha256, idempotency_key
from earshot.client.http import USER_AGENT, Transport

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Result files (``/result?format=``) and then the Spotify-shaped views (routes of their own).
FORMATS = ("json", "csv", "npz", "segments", "audio-features", "audio-analysis")
VIEWS = ("audio-features", "audio-analysis")
# The media type the API serves each result format as, and the job link that points at it.
RESULT_TYPES = {
    "json": "application/json",
    "csv": "text/csv",
    "npz": "application/zip",
    "segments": "application/json",
    "audio-features": "application/json",
    "audio-analysis": "application/json",
}
RESULT_LINKS = {"json": "result", "csv": "csv", "npz": "npz"}
FINISHED = frozenset({"succeeded", "failed", "canceled"})
PENDING = frozenset({"queued", "running"})

Job = dict[str, Any]
Format = Literal["json", "csv", "npz", "segments", "audio-features", "audio-analysis"]


def result_url(job: Mapping[str, Any], fmt: str) -> str:
    """The URL of a job's ``fmt`` result, with ``format=fmt`` in its own query string (a view:
    its own path, ``/v1/analyses/<id>/audio-features``).

    The job's link is used when it is a path on this API; an absolute link to another origin
    is not followed (the API key goes to the client's base URL only), the path is built from
    the id.
    """
    if fmt in VIEWS:
        return f"/v1/analyses/{_quoted(job)}/{fmt}"
    links = job.get("links")
    name = RESULT_LINKS.get(fmt)
    link = links.get(name) if isinstance(links, Mapping) and name else None
    url = httpx.URL(link) if isinstance(link, str) else None
    if url is None or url.is_absolute_url or url.host or not url.path.startswith("/"):
        url = httpx.URL(f"/v1/analyses/{urllib.parse.quote(str(job['id']), safe='')}/result")
    return str(url.copy_set_param("format", fmt))


def _job_id(job: Mapping[str, Any] | str) -> str:
    return job if isinstance(job, str) else str(job["id"])


def _quoted(job: Mapping[str, Any] | str) -> str:
    return urllib.parse.quote(_job_id(job), safe="")


# Longest a status request asks the server to hold (below the transport's 60-s timeout).
MAX_HOLD_S = 30.0


class Client:
    """A synchronous client of one earshot API. Thread-safe; close it (or use ``with``).

    Parameters
    ----------
    url : str
        Base URL of the API, e.g. ``http://127.0.0.1:8000``.
    api_key : str or None
        Sent as ``Authorization: Bearer`` when given.
    timeout : float
        Seconds one HTTP request may take before it counts as failed and is retried.
    max_retries : int
        Retries of one request on transient errors before ``TransientExhausted``.
    connections : int
        Requests that may be in flight at once (threads sharing this client).
    stop : threading.Event or None
        When set, waits between retries and polls end with ``Interrupted``.
    on_retry : callable or None
        Called with (what failed, delay in seconds) before each retry.
    """

    def __init__(
        self,
        url: str = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 8,
        connections: int = 4,
        stop: threading.Event | None = None,
        on_retry: Callable[[str, float], None] | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.transport = Transport(
            url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            connections=connections,
            stop=stop,
            on_retry=on_retry,
            user_agent=user_agent,
        )
        self.stop = self.transport.stop

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """One ``GET /healthz``, not retried: raise unless an earshot API answers at the URL."""
        self.transport.check()

    def upload(
        self,
        path: str | Path,
        *,
        profile: str = "standard",
        priority: str | None = None,
        key: str | None = None,
    ) -> tuple[Job, bool]:
        """Upload one file; returns the job and whether the server created it (202) or replayed.

        ``key`` is the ``Idempotency-Key``; without one it is derived from the file's sha256
        and ``profile`` (as ``earshot submit`` does), so uploading the same file again answers
        with the job made the first time. ``priority`` (``interactive`` or ``batch``) picks the
        queue; None leaves it to the API.
        """
        path = Path(path)
        if key is None:
            key = idempotency_key(file_sha256(path), profile=profile)

        def body() -> dict[str, Any]:
            fh = path.open("rb")
            return {"files": {"file": (path.name, fh, "application/octet-stream")}}

        data = {"profile": profile}
        if priority is not None:
            data["priority"] = priority
        response = self.transport.request(
            "POST",
            "/v1/analyses",
            ok=(200, 201, 202),
            body=body,
            data=data,
            headers={"Idempotency-Key": key},
        )
        job: Job = response.json()
        return job, response.status_code != 200

    def submit(
        self,
        path: str | Path,
        *,
        profile: str = "standard",
        priority: str | None = None,
        key: str | None = None,
    ) -> Job:
        """Upload one file for analysis; returns the job (queued, or succeeded from cache)."""
        return self.upload(path, profile=profile, priority=priority, key=key)[0]

    def get(
        self, job: Mapping[str, Any] | str, *, wait: float = 0.0, until_finished: bool = False
    ) -> Job:
        """The job as the API has it now; with ``wait``, once its status changes or ``wait``
        seconds pass (the server holds the answer, up to its EARSHOT_STATUS_WAIT_MAX_S). With
        ``until_finished`` too, once it has ended: a move to ``running`` is not an answer."""
        # In the URL itself: httpx's ``params`` would replace a query the path carried.
        hold = min(wait, MAX_HOLD_S, self.transport.timeout / 2)
        query = f"?wait={hold:g}" if hold > 0 else ""
        if query and until_finished:
            query += "&until=finished"
        found: Job = self.transport.request("GET", f"/v1/analyses/{_quoted(job)}{query}").json()
        return found

    def wait(
        self,
        job: Mapping[str, Any] | str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        on_change: Callable[[Job], None] | None = None,
    ) -> Job:
        """Follow the job until it is succeeded, failed or canceled; returns it as it ended.

        Each request asks the server to hold its answer until the status changes, for at most
        ``poll_interval`` seconds (``GET …?wait=``): a short job's end is seen within
        milliseconds, not half a poll interval later, and a long one costs a request per
        ``poll_interval``. A server that answers at once (an older one, or
        EARSHOT_STATUS_WAIT_MAX_S=0) is asked again only once the interval is over.
        ``on_change`` is called with the job each time a poll sees a new status; without it,
        each request is held until the job ends (``until=finished``), not answered when it
        starts: one request for a short job instead of two. Raises ``WaitTimeout`` when
        ``timeout`` seconds pass first, ``Interrupted`` when ``stop`` is set.
        """
        current: Job = self.get(job) if isinstance(job, str) else dict(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        status = current.get("status")
        while current.get("status") not in FINISHED:
            hold = poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(current, float(timeout or 0))
                hold = min(hold, left)
            if self.stop.is_set():
                raise Interrupted("interrupted while waiting for a job")
            asked = time.monotonic()
            current = self.get(current, wait=hold, until_finished=on_change is None)
            rest = hold - (time.monotonic() - asked)
            if current.get("status") == status and rest > 0 and self.stop.wait(rest):
                raise Interrupted("interrupted while waiting for a job")
            if current.get("status") != status:
                status = current.get("status")
                if on_change is not None:
                    on_change(current)
        return current

    @overload
    def result(
        self,
        job: Mapping[str, Any] | str,
        format: Literal["json", "audio-features", "audio-analysis"] = ...,
    ) -> Job: ...

    @overload
    def result(self, job: Mapping[str, Any] | str, format: Literal["segments"]) -> list[Job]: ...

    @overload
    def result(self, job: Mapping[str, Any] | str, format: Literal["csv", "npz"]) -> bytes: ...

    def result(
        self, job: Mapping[str, Any] | str, format: Format = "json"
    ) -> Job | list[Job] | bytes:
        """A succeeded job's result: the document (``json``), a Spotify-shaped view
        (``audio-features``, ``audio-analysis``), the list of segments (``segments``), or the
        file's bytes (csv, npz).

        The bytes of ``npz`` open with ``numpy.load(io.BytesIO(data))``. A body served with
        another media type than the format's is an ``unexpected_content_type`` ApiProblem.
        """
        ref: Mapping[str, Any] = {"id": job} if isinstance(job, str) else job
        response = self.transport.request(
            "GET", result_url(ref, format), expect_type=RESULT_TYPES[format]
        )
        if RESULT_TYPES[format] == "application/json":
            parsed: Job | list[Job] = response.json()
            return parsed
        return response.content

    def audio_features(self, job: Mapping[str, Any] | str) -> Job:
        """A succeeded job's result as Spotify's audio-features object (docs/spotify.md)."""
        return self.result(job, "audio-features")

    def audio_analysis(self, job: Mapping[str, Any] | str) -> Job:
        """A succeeded job's result as Spotify's audio-analysis object (docs/spotify.md)."""
        return self.result(job, "audio-analysis")

    def download(self, job: Mapping[str, Any] | str, fmt: str, dest: str | Path) -> Path:
        """Write the job's ``fmt`` result file to ``dest``; refuse a body of another type.

        The file is streamed to a temporary sibling and renamed, so ``dest`` is whole or absent.
        The URL carries its own ``?format=``: httpx replaces a URL's whole query string with
        ``params`` (even an empty dict), which once turned every CSV and NPZ into a copy of the
        JSON document.
        """
        dest = Path(dest)
        ref: Mapping[str, Any] = {"id": job} if isinstance(job, str) else job
        url = result_url(ref, fmt)
        self.transport.request("GET", url, stream_to=dest, expect_type=RESULT_TYPES[fmt])
        return dest

    def cancel(self, job: Mapping[str, Any] | str) -> Job:
        """Cancel a queued or running job; returns it, now ``canceled``.

        A finished job answers 409 ``already_finished`` (an ApiProblem).
        """
        canceled: Job = self.transport.request("DELETE", f"/v1/analyses/{_quoted(job)}").json()
        return canceled

    def list(self, *, status: str | None = None, page_size: int = 50) -> Iterator[Job]:
        """Every job of this API key, newest first, following the list's cursor page by page."""
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if status is not None:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = self.transport.request("GET", "/v1/analyses", params=params).json()
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def analyze(
        self,
        path: str | Path,
        *,
        profile: str = "standard",
        priority: str | None = "interactive",
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> Job:
        """Upload ``path``, wait for its analysis and return the result document.

        The document is the one described in docs/result.md (``audio``, ``summary``, …).
        Raises ``JobFailed`` (with the job's error code and message) when the analysis fails
        or is canceled, ``ApiProblem`` when the API refuses the upload (e.g. 415
        ``unsupported_media_type``), ``WaitTimeout`` after ``timeout`` seconds of waiting.
        """
        job = self.submit(path, profile=profile, priority=priority)
        job = self.wait(job, poll_interval=poll_interval, timeout=timeout)
        if job.get("status") != "succeeded":
            raise JobFailed(job)
        return self.result(job)
