"""``/docs`` (Swagger UI) and ``/redoc``, with their scripts and styles served by this app.

FastAPI's default pages load swagger-ui-dist and redoc from cdn.jsdelivr.net (and fonts from
Google), so they were blank offline or behind a firewall. The files under ``api/static/vendor``
are the npm packages' own (swagger-ui-dist 5.35.0, redoc 2.5.4; its README.md says where from).
Only the files listed in VENDOR are served, never a path taken from the URL.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api import errors

router = APIRouter(include_in_schema=False)

VENDOR_DIR = Path(__file__).resolve().parent.parent / "static" / "vendor"
VENDOR_URL = "/static/vendor/"
VENDOR = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# The names carry no version, so a browser must revalidate (cheap: ETag, 304) to notice an
# upgrade.
CACHE_CONTROL = "no-cache"
TITLE = "earshot API"
# Only this origin: the pages work without a network and tell no other host they were opened.
# ReDoc's sidebar always asks cdn.redoc.ly for its logo (it hides the image when that fails);
# img-src keeps the browser from asking. Styles are injected at run time by both UIs; ReDoc's
# search index runs in a worker made from a blob: URL.
CSP = (
    "default-src 'self'; script-src 'self'{inline}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@lru_cache(maxsize=len(VENDOR))
def _load(name: str) -> tuple[bytes, str]:
    data = (VENDOR_DIR / name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _openapi_url(request: Request) -> str:
    return request.scope.get("root_path", "") + (request.app.openapi_url or "/openapi.json")


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a CSP allowing this origin and, by hash, its own inline scripts."""
    html = bytes(page.body).decode()
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    page.headers["Content-Security-Policy"] = CSP.format(inline=hashes)
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=VENDOR_URL + "swagger-ui-bundle.js",
        swagger_css_url=VENDOR_URL + "swagger-ui.css",
        swagger_favicon_url=VENDOR_URL + "favicon-32x32.png",
        # No "valid" badge fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    return _with_csp(page)


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} - ReDoc",
        redoc_js_url=VENDOR_URL + "redoc.standalone.js",
        redoc_favicon_url=VENDOR_URL + "favicon-32x32.png",
        with_google_fonts=False,
    )
    return _with_csp(page)


@router.get(VENDOR_URL + "{name}")
def vendor_file(
    name: str, if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None
) -> Response:
    if name not in VENDOR:
        raise errors.NotFound(f"no static file {name!r}")
    data, etag = _load(name)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=VENDOR[name], headers=headers)
