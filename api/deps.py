"""Request dependencies: the runtime, the caller (owner) and the request id."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import Depends, Request

# The API-key logic lives in api/auth.py; api_keys is re-exported for the app factory.
from api.auth import api_keys as api_keys
from api.auth import get_owner
from core.runtime import Runtime

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is echoed into logs and the job record: keep it short and plain.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(value: str | None) -> str:
    """The client's X-Request-ID when it is plain enough to log, else a new one."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


# The dependencies are ``async`` though they await nothing: FastAPI runs a plain ``def``
# dependency on a worker thread, and that hand-over, per dependency and request, cost more CPU
# than a status request's own work.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or request_id_from(None)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
OwnerDep = Annotated[str, Depends(get_owner)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
