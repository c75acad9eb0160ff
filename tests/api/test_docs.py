"""``/docs`` and ``/redoc`` load nothing from another host: their scripts come from the package."""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.api.test_analyses import assert_problem

ROOT = Path(__file__).resolve().parents[2]
URL_ATTRIBUTES = {"src", "href", "spec-url"}


class UrlCollector(HTMLParser):
    """Every URL a page names in an attribute, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def page_urls(client: TestClient, path: str) -> list[str]:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    parser = UrlCollector()
    parser.feed(r.text)
    # Swagger UI is handed the document's URL in its inline script.
    for script in parser.scripts:
        parser.urls += re.findall(r"\burl:\s*'([^']*)'", script)
    assert not re.search(r"(?i)\bhttps?://|//cdn\.|fonts\.googleapis", r.text), r.text
    # The browser is told the same: no source but this origin (and data:/blob: URLs it makes).
    policy = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    for directive in ("default-src", "script-src", "img-src", "connect-src", "style-src"):
        sources = policy[directive].split()
        assert sources[0] == "'self'", policy
        assert not [s for s in sources if "://" in s or s in ("*", "https:", "http:")], policy
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_only_same_origin_urls_and_each_one_answers(
    client: TestClient, page: str
) -> None:
    urls = page_urls(client, page)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, urls  # the UI itself is among them
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from elsewhere"
        assert url.startswith("/"), url
        r = client.get(url)
        assert r.status_code == 200, url
        kind = r.headers["content-type"]
        if url.endswith(".js"):
            assert kind.startswith("text/javascript")
            assert len(r.content) > 500_000, url  # the whole bundle, not a stub
        elif url.endswith(".css"):
            assert kind.startswith("text/css")
            assert len(r.content) > 50_000, url
        elif url.endswith(".png"):
            assert kind == "image/png"
            assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert url == "/openapi.json", url
            assert r.json()["openapi"].startswith("3.")


def test_a_vendor_file_revalidates_with_its_etag(client: TestClient) -> None:
    first = client.get("/static/vendor/swagger-ui.css")
    again = client.get(
        "/static/vendor/swagger-ui.css", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/static/vendor/README.md",
        "/static/vendor/swagger-ui-bundle.js.map",
        "/static/vendor/..%2F..%2Fapp.py",
        "/static/vendor/%2e%2e%2fapp.js",
    ],
)
def test_only_the_listed_vendor_files_are_served(client: TestClient, path: str) -> None:
    assert_problem(client.get(path), 404, "not_found")


def test_the_vendor_files_are_package_data() -> None:
    # setuptools expands package-data globs like glob.glob: "static/*" does not reach into
    # static/vendor, and a wheel without the files serves a blank /docs again.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["api"]
    packaged = {p for pattern in patterns for p in (ROOT / "api").glob(pattern) if p.is_file()}
    vendor = {p for p in (ROOT / "api" / "static" / "vendor").iterdir() if p.is_file()}
    assert {p.name for p in vendor} >= {"swagger-ui-bundle.js", "redoc.standalone.js"}
    assert vendor <= packaged, sorted(p.name for p in vendor - packaged)
