"""The Runtime the API and the workers share: publish, readiness, and staying light."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from core.broker import EMBEDDED_POLLING_INTERVAL_S, broker_folders
from core.errors import BrokerUnavailable
from core.names import Priority, Queue
from core.runtime import Runtime, build_runtime
from core.settings import Settings
from tests.tasks.conftest import submit

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("priority", "queue"),
    [(Priority.INTERACTIVE, Queue.INTERACTIVE), (Priority.BATCH, Queue.BATCH)],
)
def test_publish_routes_by_priority_with_the_id_only(
    runtime: Runtime, wav_bytes: bytes, priority: Priority, queue: Queue
) -> None:
    job = dataclasses.replace(submit(runtime, wav_bytes), priority=priority.value)

    runtime.publish(job)

    folder = Path(broker_folders(runtime.settings)["data_folder_out"])
    [message] = list(folder.glob("*.msg"))
    assert message.name.endswith(f".{queue.value}.msg")
    # The message names the job; the audio never travels through the broker.
    assert job.id.encode() in message.read_bytes()
    assert message.stat().st_size < 4096


def test_unreachable_broker_raises_and_reports_not_ready(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused.
    settings = Settings(data_dir=tmp_path / "var", broker_url="amqp://guest:guest@127.0.0.1:1//")
    runtime = build_runtime(settings)
    try:
        runtime.jobs.create_schema()
        job, _ = runtime.jobs.create(
            filename="a.wav", size_bytes=1, sha256="0" * 64, profile="standard", priority="batch"
        )
        with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1|refused|connect"):
            runtime.publish(job)
        assert runtime.readiness() == {"broker": False, "database": True, "blobs": True}
    finally:
        runtime.close()


def test_embedded_runtime_is_ready(runtime: Runtime) -> None:
    assert runtime.readiness() == {"broker": True, "database": True, "blobs": True}


def test_runtime_never_imports_the_analysis_stack() -> None:
    # The API process builds a Runtime; librosa/numpy must stay out of it.
    code = (
        "import sys, tempfile, pathlib\n"
        "from core.runtime import build_runtime\n"
        "from core.settings import Settings\n"
        "rt = build_runtime(Settings(data_dir=pathlib.Path(tempfile.mkdtemp())))\n"
        "assert rt.analyzer_version\n"
        "light = {'analysis', 'analysis.profiles', 'analysis.version', 'analysis.errors'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('librosa', 'numpy', 'numba')"
        " or (m.split('.')[0] == 'analysis' and m not in light))\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_embedded_consumer_polls_the_message_folder_often(runtime: Runtime) -> None:
    # kombu's 1 s default made a worker pool idle up to a second after every task.
    with runtime.celery.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.transport.polling_interval == EMBEDDED_POLLING_INTERVAL_S
    assert EMBEDDED_POLLING_INTERVAL_S <= 0.1
