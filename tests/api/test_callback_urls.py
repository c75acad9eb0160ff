"""callback_url at upload: hostile URLs are a 422 `invalid_callback_url` and leave nothing
behind (no stored upload, no job, no queued message); the test receiver never sees a
connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import queued_messages, runtime_of, stored_uploads, upload
from tests.api.test_analyses import assert_problem


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A TCP socket on 127.0.0.1 that records every connection made to it."""
    accepted: list[object] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1]), accepted
    stop.set()
    thread.join(timeout=5)
    sock.close()


def assert_nothing_left(client: TestClient) -> None:
    assert stored_uploads(client) == []
    assert runtime_of(client).jobs.list()[0] == []
    assert queued_messages(client) == []


HOSTILE = [
    "http://localhost:{port}/",
    "http://127.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://2130706433:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::1]:{port}/",
    "http://[::]:{port}/",
    "http://0.0.0.0:{port}/",
    "http://[fe80::1]:{port}/",
    "http://[::ffff:10.0.0.1]:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1:{port}/",
    "http://192.168.0.1:{port}/",
    "http://224.0.0.1:{port}/",
    "http://127.0.0.1:{port}/hook\r\nX-Injected: yes",
    "http://127.0.0.1:{port}/ hook",
    "http://user:secret@93.184.216.34/",
    "http://93.184.216.34:0/",
    "http://93.184.216.34:65536/",
    "gopher://127.0.0.1:{port}/",
    "http:///nohost",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_a_hostile_callback_url_is_refused_at_upload(
    client: TestClient, listener: tuple[int, list[object]], template: str
) -> None:
    port, accepted = listener
    url = template.format(port=port)

    body = assert_problem(upload(client, callback_url=url), 422, "invalid_callback_url")

    assert body["detail"].startswith("callback_url")
    assert_nothing_left(client)
    assert accepted == []


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://localhost/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://example.org/a\nb", "'\\n'"),
        ("http://u@example.org/", "user name or password"),
        ("http://example.org:0/", "port 0"),
        ("ftp://example.org/", "http or https"),
        ("http://example.org/" + "x" * 2100, "limit is 2048"),
    ],
)
def test_the_problem_names_the_broken_rule(client: TestClient, url: str, rule: str) -> None:
    body = assert_problem(upload(client, callback_url=url), 422, "invalid_callback_url")
    assert rule in body["detail"]


def test_a_public_address_is_accepted_and_stored(client: TestClient) -> None:
    url = "https://93.184.216.34:8443/hooks/earshot?tenant=7"
    answer = upload(client, callback_url=url)
    assert answer.status_code == 202, answer.text
    assert answer.json()["callback_url"] == url


def test_the_allowlist_admits_a_loopback_receiver(
    make_client: Callable[..., TestClient], listener: tuple[int, list[object]]
) -> None:
    port, _ = listener
    client = make_client(webhook_allow="127.0.0.0/8")
    answer = upload(client, callback_url=f"http://127.0.0.1:{port}/hook")
    assert answer.status_code == 202, answer.text
    # Only what it names: a private network stays closed.
    assert_problem(upload(client, callback_url="http://10.0.0.1/"), 422, "invalid_callback_url")


def test_the_refusal_is_documented_in_the_openapi_schema(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/analyses"]["post"]
    assert "invalid_callback_url" in str(operation["responses"]["422"])
