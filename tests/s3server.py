"""A real S3-compatible server for tests: moto's standalone server in a subprocess.

Import the fixture where it is needed (``from tests.s3server import s3_server``) or list
this module in ``pytest_plugins``. The server speaks the S3 HTTP API on 127.0.0.1, so the
code under test goes through botocore, HTTP and XML exactly as it would against SeaweedFS.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and the (dummy) credentials it accepts."""

    endpoint_url: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    def options(self) -> dict[str, str | None]:
        """Keyword options for ``open_blob_store`` / ``S3BlobStore.from_url``."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    def env(self) -> dict[str, str]:
        """The ``EARSHOT_S3_*`` environment of a service process talking to this server."""
        return {
            "EARSHOT_S3_ENDPOINT_URL": self.endpoint_url,
            "EARSHOT_S3_REGION": self.region,
            "EARSHOT_S3_ACCESS_KEY_ID": self.access_key_id,
            "EARSHOT_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def blob_url(self, bucket: str = "earshot-test") -> str:
        """A fresh ``s3://`` URL: a new prefix in ``bucket`` each call, so tests never collide."""
        return f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer at {url} within {STARTUP_TIMEOUT_S} s")


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's server on a free 127.0.0.1 port; stop it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(proc, url)
        yield S3Server(endpoint_url=url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session (starting one takes about a second)."""
    with running_s3_server() as server:
        yield server
