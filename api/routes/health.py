"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter

from api import errors, problems
from api.deps import RuntimeDep
from api.models import Health, Readiness

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    operation_id="getHealth",
    response_model=Health,
    summary="Liveness",
    description="Answers as long as the process serves HTTP; checks no dependency (restarting "
    "the API would not fix a database outage).",
)
async def healthz() -> Health:
    # async: it needs no thread, so it answers even when every worker thread is busy.
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="getReadiness",
    response_model=Readiness,
    summary="Readiness",
    description="Whether the broker, the job store and the blob store answer now. 503 "
    "`not_ready` (with the same `checks`) when any does not: take the instance out of "
    "rotation.",
    responses=problems.responses(errors.NotReady),
)
def readyz(runtime: RuntimeDep) -> Readiness:
    checks = runtime.readiness()
    if not all(checks.values()):
        down = ", ".join(name for name, ok in checks.items() if not ok)
        raise errors.NotReady(
            f"not ready: {down} unreachable",
            headers={"Retry-After": str(problems.RETRY_AFTER_S)},
            extra={"checks": checks},
        )
    return Readiness(status="ready", checks=checks, analyzer_version=runtime.analyzer_version)
