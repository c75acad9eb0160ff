"""The embedded mode end to end: `earshot dev` (API + one worker pool per queue) on a
`filesystem://` broker, SQLite and a local blob folder under a temporary data dir."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.names import FRAMES_CSV, FRAMES_NPZ, RESULT_JSON, JobStatus
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from tests.integration.conftest import (
    SAMPLES,
    Service,
    free_port,
    service_env,
    submit_file,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc; no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


class Dev:
    def __init__(self, service: Service, base_url: str, data_dir: Path) -> None:
        self.service = service
        self.base_url = base_url
        self.data_dir = data_dir


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, numba_cache: Path) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("embedded")
    port = free_port()
    service = Service(
        ["dev", "--port", str(port)],
        env=service_env(root / "var", numba_cache),
        log=root / "dev.log",
    )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        service.assert_alive()
        try:
            return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, what="`earshot dev` to answer /healthz")
    workers = wait_for(lambda: children_of(service.process.pid), what="dev's children")
    yield Dev(service, base_url, root / "var")

    pids = [service.process.pid, *workers]
    pids += [p for w in workers for p in children_of(w)]
    assert service.stop(signal.SIGTERM) == 0, service.log()[-4000:]
    # Ctrl-C/SIGTERM stops everything: API, both worker pools and their pool processes.
    assert not [p for p in pids if alive(p)], service.log()[-4000:]
    assert "Traceback" not in service.log(), service.log()[-4000:]


@pytest.fixture
def runtime(dev: Dev) -> Iterator[Runtime]:
    rt = build_runtime(Settings(data_dir=dev.data_dir))
    yield rt
    rt.close()


def test_upload_over_http_to_downloaded_result(dev: Dev) -> None:
    sample = SAMPLES / "click120_cmajor.wav"
    with httpx.Client(base_url=dev.base_url, timeout=30) as client:
        with sample.open("rb") as f:
            answer = client.post(
                "/v1/analyses",
                files={"file": (sample.name, f, "audio/wav")},
                data={"priority": "interactive"},
            )
        assert answer.status_code == 202, answer.text
        location = answer.headers["Location"]
        assert answer.json()["status"] in ("queued", "running", "succeeded")

        def finished() -> dict | None:
            dev.service.assert_alive()
            job = client.get(location).json()
            return job if job["status"] in ("succeeded", "failed", "canceled") else None

        job = wait_for(finished, what=f"{location} to finish")
        assert job["status"] == "succeeded", job
        assert job["progress"]["percent"] == 100.0

        document = client.get(f"{location}/result").json()
        assert document["summary"]["tempo"]["bpm"] == pytest.approx(120, abs=3)
        assert document["summary"]["key"]["tonic"] == "C"
        csv = client.get(f"{location}/result", params={"format": "csv"})
        assert csv.status_code == 200
        assert len(csv.text.splitlines()) > 10
        npz = client.get(f"{location}/result", params={"format": "npz"})
        assert npz.status_code == 200
        assert npz.content.startswith(b"PK")


def test_job_published_through_runtime_is_analysed(dev: Dev, runtime: Runtime) -> None:
    job = submit_file(runtime, SAMPLES / "sine440.flac")

    done = wait_finished(runtime, job.id, services=(dev.service,))

    assert done.status is JobStatus.SUCCEEDED, (done.error_code, done.error_message)
    assert done.attempts == 1
    prefix = done.result_prefix or ""
    document = json.loads(runtime.blobs.get_bytes(prefix + RESULT_JSON))
    assert document["summary"]["spectral_centroid_hz"]["mean"] == pytest.approx(440, rel=0.1)
    assert runtime.blobs.exists(prefix + FRAMES_CSV)
    assert runtime.blobs.exists(prefix + FRAMES_NPZ)


def test_invalid_audio_fails_with_its_code(dev: Dev, runtime: Runtime, tmp_path: Path) -> None:
    # Past the API's sniffing (a WAV header) but not decodable: the worker must say why.
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200)
    job = submit_file(runtime, broken)

    done = wait_finished(runtime, job.id, services=(dev.service,))

    assert done.status is JobStatus.FAILED
    assert done.error_code and done.error_code != "internal_error", done.error_message
    assert done.attempts == 1
