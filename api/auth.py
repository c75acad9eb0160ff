"""API keys: who is calling, and the owner id recorded on the jobs they create.

With ``EARSHOT_API_KEYS`` (comma-separated) or ``EARSHOT_API_KEYS_FILE`` (one key per line,
``#`` comments) set, every route but the health probes needs ``Authorization: Bearer <key>``
(or ``X-API-Key: <key>``). Without either the service is open and belongs to the anonymous
owner; ``earshot serve`` then refuses to listen beyond 127.0.0.1.

A job's owner is a digest of the key, never the key: a database dump does not leak keys, and
rotating a key hands its jobs to nobody.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from api.errors import Unauthorized
from core.jobs import ANONYMOUS
from core.settings import Settings

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def api_keys(settings: Settings) -> list[str]:
    """Configured API keys from EARSHOT_API_KEYS and EARSHOT_API_KEYS_FILE; empty = open."""
    keys = [k.strip() for k in (settings.api_keys or "").split(",")]
    if settings.api_keys_file is not None:
        keys += [line.strip() for line in settings.api_keys_file.read_text().splitlines()]
    return [k for k in keys if k and not k.startswith("#")]


def owner_of(key: str) -> str:
    """The owner recorded on jobs for an API key: a digest, so the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def presented_key(request: Request) -> str:
    """The key the client sent: ``Authorization: Bearer <key>``, else ``X-API-Key``; or ''."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def matches(given: str, keys: list[str]) -> bool:
    """Whether ``given`` is one of ``keys``, in time independent of where they differ.

    Both sides are hashed first, so the comparison has a fixed length (``compare_digest`` on
    raw keys of different lengths returns early), and every key is compared, so the time
    does not tell which key or how many keys share a prefix with the guess.
    """
    digest = hashlib.sha256(given.encode()).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return found


async def get_owner(request: Request) -> str:
    """Who is calling: the anonymous owner on an open service, else the API key's owner.

    ``async`` though it awaits nothing: FastAPI runs a plain ``def`` dependency on a worker
    thread, a hand-over that cost more than the check (as for ``api.deps``' dependencies).

    Raises Unauthorized (401, ``WWW-Authenticate: Bearer``) for a missing or unknown key.
    """
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return ANONYMOUS
    given = presented_key(request)
    if not given:
        raise Unauthorized(
            "this service needs an API key: send `Authorization: Bearer <key>`", headers=CHALLENGE
        )
    if not matches(given, keys):
        raise Unauthorized("unknown API key", headers=CHALLENGE)
    return owner_of(given)
