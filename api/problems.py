"""RFC 9457 problem details: the one shape of every error the API answers.

Each problem has a stable ``code`` and a ``type`` URI made from it
(``https://earshot.dev/problems/<code>``), so clients branch on ``code`` and never on ``title``
or ``detail``, which are for people.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api import errors
from core.errors import JobNotFound, TransientStoreError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://earshot.dev/problems/"

# How long a client should wait before retrying after a 503 (broker or store outage).
RETRY_AFTER_S = 5

log = logging.getLogger("earshot.api")


def type_uri(code: str) -> str:
    return TYPE_BASE + code


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://earshot.dev/problems/not_found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "analysis '3f2a…' not found",
                    "code": "not_found",
                    "instance": "/v1/analyses/3f2a…",
                    "request_id": "b5c1e0d2a9f84c7e",
                }
            ]
        },
    )

    type: str = Field(description="URI naming the kind of problem; stable, derived from `code`.")
    title: str = Field(description="Short summary of the kind of problem, for people.")
    status: int = Field(description="The HTTP status code of this response.")
    detail: str = Field(description="What went wrong in this request, for people.")
    code: str = Field(description="Stable machine-readable code; branch on this.")
    instance: str | None = Field(None, description="The request path that produced the problem.")
    request_id: str | None = Field(None, description="Request id, also in `X-Request-ID`.")


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_uri(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
    }
    body.update(extra or {})
    return JSONResponse(
        jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def from_error(request: Request, exc: errors.ApiError) -> JSONResponse:
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra,
    )


def responses(*error_types: type[errors.ApiError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries documenting ``error_types`` as problem documents."""
    by_status: dict[int, list[type[errors.ApiError]]] = {}
    for error_type in error_types:
        by_status.setdefault(error_type.status, []).append(error_type)
    documented: dict[int | str, dict[str, Any]] = {}
    for status, types in sorted(by_status.items()):
        documented[status] = {
            "description": "; ".join(f"`{t.code}`: {_doc(t)}" for t in types),
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        t.code: {
                            "summary": t.title,
                            "value": {
                                "type": type_uri(t.code),
                                "title": t.title,
                                "status": t.status,
                                "detail": _doc(t),
                                "code": t.code,
                            },
                        }
                        for t in types
                    },
                }
            },
        }
    return documented


def add_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document tell the truth about errors: every one is a Problem.

    Adds the Problem schema, and replaces the 422 FastAPI documents by default (its own
    HTTPValidationError shape, which this API never sends) with the problem document.
    """
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    invalid = responses(errors.InvalidRequest)[422]
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            documented = operation.get("responses", {})
            if "422" in documented and "application/json" in documented["422"].get("content", {}):
                documented["422"] = invalid
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return openapi


def _doc(error_type: type[errors.ApiError]) -> str:
    doc = (error_type.__doc__ or error_type.title).strip().splitlines()[0]
    return doc.removeprefix("Raised when ").rstrip(".")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (for a 405's ``Allow``)."""
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
            if method == "GET":
                # HEAD is answered wherever GET is (api.app.HeadMiddleware), not by a route.
                allowed.append("HEAD")
    return allowed


def install(app: FastAPI) -> None:
    """Answer every error — ours, routing's, validation's, unexpected ones — as a problem."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.ApiError)
        return from_error(request, exc)

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return from_error(request, errors.NotFound(f"no route for {request.url.path}"))
        if exc.status_code == 405:
            # Starlette's Allow names only the first route matching the path; a path served by
            # several routes (GET and POST /v1/analyses) must list all their methods.
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
            error = errors.MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}", headers=headers
            )
            return from_error(request, error)
        return problem_response(
            request,
            status=exc.status_code,
            code=f"http_{exc.status_code}",
            title=str(exc.detail),
            detail=str(exc.detail),
            headers=headers,
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in problems)
        return from_error(request, errors.InvalidRequest(detail, extra={"errors": problems}))

    async def on_job_not_found(request: Request, exc: Exception) -> JSONResponse:
        return from_error(request, errors.NotFound(str(exc)))

    async def on_transient(request: Request, exc: Exception) -> JSONResponse:
        log.warning("store unavailable: %s", exc)
        error = errors.StoreUnavailable(
            "the job store or blob store is briefly unreachable; retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
        return from_error(request, error)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return from_error(request, errors.ApiError("an unexpected error occurred"))

    app.add_exception_handler(errors.ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(JobNotFound, on_job_not_found)
    app.add_exception_handler(TransientStoreError, on_transient)
    # The database refusing connections (restart, failover) is an outage, not a bug.
    app.add_exception_handler(OperationalError, on_transient)
    app.add_exception_handler(Exception, on_unexpected)
