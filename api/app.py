"""The FastAPI application: ``create_app(settings)`` wires routes, problems and the runtime.

The API process never imports the analysis package (librosa, numba): it stores uploads,
records jobs and publishes them by task name.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics, problems, uploads
from api.deps import REQUEST_ID_HEADER, api_keys, request_id_from
from api.routes import analyses, audio, docs, events, health, plots, submit, ui, views
from core.jobs import JOB_STATUS_CHANNEL
from core.logs import log_context
from core.runtime import Runtime, build_runtime
from core.settings import Settings, get_settings
from core.wakeup import DatabaseChanges, PostgresChanges

log = logging.getLogger("earshot.api")

DESCRIPTION = """\
Upload audio, get librosa features back.

Submit a file with `POST /v1/analyses`, follow the job at the `Location` it answers with, and
download the result (`/result`, as JSON, CSV or NPZ) once its status is `succeeded`.

Every error is an [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem document
(`application/problem+json`) with a stable `code`; branch on `code`, show `detail`.
Every response carries `X-Request-ID` (yours if you sent one).
"""

TAGS = [
    {"name": "analyses", "description": "Submit audio, follow jobs, fetch results, cancel."},
    {"name": "health", "description": "Probes for orchestrators and load balancers."},
]


class RequestIdMiddleware:
    """Take the client's X-Request-ID (or make one), expose it to routes, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER.lower().encode():
                given = value.decode("latin-1")
        request_id = request_id_from(given)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        # The log context carries the id into every log line and, via the Celery publish
        # hook, into the task message headers (core.logs).
        with log_context(request=request_id):
            await self.app(scope, receive, send_with_id)


class HeadSent(OSError):
    """Raised into a HEAD response's body writer once the headers went out: nobody reads on."""


class HeadMiddleware:
    """Answer ``HEAD`` on every ``GET`` route: run the GET, send its status and headers, no body.

    FastAPI's routes take only the methods they declare, so HEAD was a 405 everywhere. Adding
    HEAD to each route would also put a second operation (with a duplicate operationId) per
    path into the OpenAPI document; HTTP defines HEAD as GET without the body (RFC 9110 9.3.2),
    so one place does it for all. The inner app sees GET (same auth, same validation, same
    Content-Length and ETag, If-None-Match still 304); the server sees HEAD again before the
    headers go out, so it sends no body. A streaming body (a result file, the event stream)
    is stopped at its first chunk, as if the client had gone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        # In place, not a copy: outer middleware read what routing writes into the scope (the
        # route template for metrics).
        scope["method"] = "GET"
        headers_sent = False

        async def send_headers_only(message: Message) -> None:
            nonlocal headers_sent
            if message["type"] == "http.response.start":
                scope["method"] = "HEAD"
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                headers_sent = True
            elif message["type"] == "http.response.body" and headers_sent:
                if message.get("more_body", False):
                    raise HeadSent("HEAD: the body is not sent")
            else:
                await send(message)

        try:
            await self.app(scope, receive, send_headers_only)
        except (HeadSent, ClientDisconnect):
            if not headers_sent:
                raise
        finally:
            scope["method"] = "HEAD"


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The API for ``settings`` (default: the environment's), on ``runtime`` if given."""
    settings = settings or get_settings()
    runtime = runtime or build_runtime(settings)
    keys = api_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not keys:
            log.warning(
                "no API keys configured (EARSHOT_API_KEYS): the API is open to anyone who can "
                "reach it; keep it bound to 127.0.0.1"
            )
        # Held status requests (GET /v1/analyses/{id}?wait=) wake when the embedded SQLite
        # store is written, or when PostgreSQL announces a status change, instead of polling
        # every few milliseconds.
        url = runtime.jobs.url
        changes: DatabaseChanges | PostgresChanges | None = None
        if url.startswith("sqlite:///"):
            changes = DatabaseChanges(Path(url.removeprefix("sqlite:///")))
        elif url.startswith("postgresql"):
            changes = PostgresChanges(url, JOB_STATUS_CHANNEL)
        app.state.db_changes = changes
        try:
            yield
        finally:
            if changes is not None:
                changes.close()
            runtime.close()

    app = FastAPI(
        title="earshot",
        version="1",
        summary="Open audio-analysis backend",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by api/routes/docs.py from the package instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.api_keys = keys
    app.state.upload_slots = uploads.UploadSlots(
        settings.max_concurrent_uploads, idle_timeout_s=settings.upload_idle_timeout_s
    )
    problems.install(app)
    app.include_router(submit.router)
    app.include_router(analyses.router)
    app.include_router(plots.router)
    app.include_router(views.router)
    app.include_router(audio.router)
    app.include_router(events.router)
    app.include_router(ui.router)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(RequestIdMiddleware)
    metrics.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = problems.add_schema(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
