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
    description="Whether the broker, the job store and the blob store answer now, and whether "
    "each queue has a worker that finished its warm-up (imports, numba's JIT) and consumes it. "
    "503 `not_ready` (with the same `checks` and `workers`) when any does not: take the "
    "instance out of rotation, or, just after a start, wait: a job uploaded meanwhile stays "
    'queued until a worker of its queue is warm ("workers starting").',
    responses=problems.responses(errors.NotReady),
)
def readyz(runtime: RuntimeDep) -> Readiness:
    checks = runtime.readiness()
    workers = runtime.warm_queues() if checks["broker"] else {}
    cold = [queue for queue, warm in workers.items() if not warm]
    if not all(checks.values()) or cold:
        down = ", ".join(name for name, ok in checks.items() if not ok)
        reasons = [f"{down} unreachable"] if down else []
        if cold:
            reasons.append(f"workers starting (no warm worker on {', '.join(cold)})")
        raise errors.NotReady(
            f"not ready: {'; '.join(reasons)}",
            headers={"Retry-After": str(problems.RETRY_AFTER_S)},
            extra={"checks": checks, "workers": workers},
        )
    return Readiness(
        status="ready", checks=checks, workers=workers, analyzer_version=runtime.analyzer_version
    )
