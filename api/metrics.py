"""HTTP metrics and the ``GET /metrics`` scrape endpoint.

Requests are labelled by route *template* (``/v1/analyses/{job_id}``), never the raw path, so
job ids do not become label values; a path no route matches is ``unmatched``.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import metric, multiprocess_dir, render

UNMATCHED = "unmatched"

# Seconds from request start to the end of the response; uploads of large files dominate the
# top buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

router = APIRouter()


def requests_total() -> Counter:
    return metric(
        Counter,
        "earshot_http_requests",
        "HTTP requests answered, by method, route template and status code.",
        ("method", "route", "status"),
    )


def request_duration() -> Histogram:
    return metric(
        Histogram,
        "earshot_http_request_duration_seconds",
        "Seconds from request start to the end of its response, by method and route template.",
        ("method", "route"),
        buckets=LATENCY_BUCKETS,
    )


def upload_bytes() -> Counter:
    return metric(
        Counter,
        "earshot_http_upload_bytes",
        "Request body bytes received, by route template.",
        ("route",),
    )


def uploads_in_progress() -> Gauge:
    return metric(
        Gauge,
        "earshot_http_uploads_in_progress",
        "Uploads streaming now (each holds one of EARSHOT_MAX_CONCURRENT_UPLOADS).",
        multiprocess_mode="livesum",
    )


def route_template(scope: Scope) -> str:
    # FastAPI's router leaves the matched route in the scope it was handed.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Count and time every HTTP request, and the body bytes it brought."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            route = route_template(scope)
            method = scope["method"]
            requests_total().labels(method=method, route=route, status=str(status)).inc()
            request_duration().labels(method=method, route=route).observe(
                time.perf_counter() - started
            )
            if received:
                upload_bytes().labels(route=route).inc(received)


@router.get("/metrics", operation_id="getMetrics", include_in_schema=False)
def get_metrics(request: Request) -> Response:
    """Prometheus text format: API, worker and queue-depth metrics of this host."""
    runtime = getattr(request.app.state, "runtime", None)
    directory: Path | None = request.app.state.metrics_dir
    body, content_type = render(
        store=runtime.jobs if runtime is not None else None, directory=directory
    )
    return Response(body, media_type=content_type)


def install(app: FastAPI) -> None:
    """Add the middleware and ``GET /metrics`` to ``app``.

    The scrape sums every process writing to ``PROMETHEUS_MULTIPROC_DIR`` when that is set
    (the service commands set it), else shows this process alone.
    """
    app.state.metrics_dir = multiprocess_dir()
    app.include_router(router)
    app.add_middleware(MetricsMiddleware)
