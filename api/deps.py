"""Request dependencies: the runtime, the caller (owner) and the request id."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Annotated

from fastapi import Depends, Request

from api.errors import Unauthorized
from tasks.jobs import ANONYMOUS
from tasks.runtime import Runtime
from tasks.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is echoed into logs and the job record: keep it short and plain.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(value: str | None) -> str:
    """The client's X-Request-ID when it is plain enough to log, else a new one."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or request_id_from(None)


def api_keys(settings: Settings) -> list[str]:
    """Configured API keys from EARSHOT_API_KEYS and EARSHOT_API_KEYS_FILE; empty = open."""
    keys = [k.strip() for k in (settings.api_keys or "").split(",")]
    if settings.api_keys_file is not None:
        keys += [line.strip() for line in settings.api_keys_file.read_text().splitlines()]
    return [k for k in keys if k and not k.startswith("#")]


def owner_of(key: str) -> str:
    """The owner recorded on jobs for an API key: a digest, so the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def get_owner(request: Request) -> str:
    """Who is calling: the anonymous owner on an open service, else the API key's owner.

    The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
    """
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return ANONYMOUS
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not given:
        raise Unauthorized(
            "this service needs an API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Compare against every key so timing does not tell how many keys match a prefix.
    matched = [hmac.compare_digest(given.encode(), k.encode()) for k in keys]
    if not any(matched):
        raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return owner_of(given)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
OwnerDep = Annotated[str, Depends(get_owner)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
