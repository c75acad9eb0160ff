"""The web page: ``/`` and its static files (a page, three scripts, a style sheet), served
from ``api/static``.

Only the files listed in STATIC are served (never a path taken from the URL), each with an
ETag of its content so a browser revalidates cheaply and picks up a new release at once.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Response

from api import errors

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "result.js": "text/javascript; charset=utf-8",
    "timeline.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Revalidate every time: the files are tiny and a stale app.js after an upgrade would talk
# to an API it does not know.
CACHE_CONTROL = "no-cache"
# The page loads nothing from elsewhere; blob: URLs are the fetched plots (and, with an API
# key, the fetched audio: an <audio> element cannot send an Authorization header).
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'"
)


@lru_cache(maxsize=len(STATIC))
def _load(name: str) -> tuple[bytes, str]:
    data = (STATIC_DIR / name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _serve(name: str, if_none_match: str | None) -> Response:
    if name not in STATIC:
        raise errors.NotFound(f"no static file {name!r}")
    data, etag = _load(name)
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
    }
    if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=STATIC[name], headers=headers)


IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


@router.get("/")
def index(if_none_match: IfNoneMatch = None) -> Response:
    return _serve("index.html", if_none_match)


@router.get("/static/{name}")
def static(name: str, if_none_match: IfNoneMatch = None) -> Response:
    return _serve(name, if_none_match)
