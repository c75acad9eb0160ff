"""One request id from the HTTP request into the worker's log lines, on real components.

The API runs on a real runtime (SQLite, local blobs, ``filesystem://`` broker under tmp_path);
the worker side takes the published message back off that broker with kombu and runs it through
Celery's own worker ``Request``, so ``task_prerun`` sees exactly what a worker would.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.worker.request import Request
from fastapi.testclient import TestClient
from kombu import Queue as KombuQueue

from api.app import create_app
from core import logs
from core.broker import make_celery
from core.errors import ConfigurationError
from core.names import Queue
from core.settings import Settings

log = logging.getLogger("earshot.test")


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def wav_bytes(seconds: float = 0.1, sr: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(bytes((i * 7) % 256 for i in range(int(seconds * sr) * 2)))
    return buf.getvalue()


def message_files(settings: Settings) -> list[dict[str, Any]]:
    """The filesystem:// broker's message files: headers and decoded body of each."""
    found = []
    for path in sorted((settings.broker_dir / "messages").glob("*.msg")):
        envelope = json.loads(path.read_text())
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        found.append({"headers": envelope["headers"], "body": json.loads(body)})
    return found


def test_json_line_carries_request_and_job_id(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure_logging(Settings(log_format="json", log_level="INFO"), stream=stream)

    with logs.log_context(request="req-42", job="3f2a"):
        log.info("analysed %d frames", 120, extra={"stage": "features"})
    log.info("outside any job")

    inside, outside = json_lines(stream)
    assert inside["message"] == "analysed 120 frames"
    assert (inside["request_id"], inside["job_id"]) == ("req-42", "3f2a")
    assert inside["level"] == "INFO"
    assert inside["logger"] == "earshot.test"
    assert inside["stage"] == "features"
    assert (outside["request_id"], outside["job_id"]) == (None, None)


def test_json_line_keeps_the_traceback(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure_logging(Settings(log_format="json"), stream=stream)
    try:
        raise ValueError("bad frame")
    except ValueError:
        log.exception("analysis crashed")
    (line,) = json_lines(stream)
    assert "ValueError: bad frame" in line["exc_info"]


def test_pretty_line_shows_the_ids(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure_logging(Settings(log_format="pretty"), stream=stream)
    with logs.log_context(request="req-7", job="job-9"):
        log.warning("slow decode")
    assert "[request_id=req-7 job_id=job-9]" in stream.getvalue()
    assert "slow decode" in stream.getvalue()


def test_auto_is_json_off_a_terminal(root_logging: None) -> None:
    stream = io.StringIO()  # not a tty, like a container's stdout
    logs.configure_logging(Settings(log_format="auto"), stream=stream)
    log.warning("hello")
    assert json_lines(stream)[0]["message"] == "hello"


def test_level_filters_and_a_second_configure_does_not_double_lines(root_logging: None) -> None:
    stream = io.StringIO()
    settings = Settings(log_format="json", log_level="WARNING")
    logs.configure_logging(settings, stream=stream)
    logs.configure_logging(settings, stream=stream)
    log.info("chatty")
    log.warning("worth reading")
    assert [line["message"] for line in json_lines(stream)] == ["worth reading"]


def test_unknown_format_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="EARSHOT_LOG_FORMAT"):
        logs.configure_logging(Settings(log_format="xml"), stream=io.StringIO())


def test_context_is_restored_after_the_block() -> None:
    with logs.log_context(request="outer"):
        with logs.log_context(request="inner", job="j"):
            assert (logs.request_id.get(), logs.job_id.get()) == ("inner", "j")
        assert (logs.request_id.get(), logs.job_id.get()) == ("outer", None)
    assert logs.request_id.get() is None


def test_request_id_of_an_http_request_reaches_the_task_message(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/analyses",
            files={"file": ("take.wav", wav_bytes(), "audio/wav")},
            headers={"X-Request-ID": "req-from-client-1"},
        )
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == "req-from-client-1"

    (message,) = message_files(settings)
    assert message["headers"][logs.REQUEST_ID_HEADER] == "req-from-client-1"
    assert message["body"][0] == [response.json()["id"]]


def test_worker_binds_request_and_job_id_from_the_message(
    tmp_path: Path, root_logging: None
) -> None:
    settings = Settings(data_dir=tmp_path / "var", log_format="json")
    app = make_celery(settings)
    seen: dict[str, str | None] = {}

    @app.task(name="earshot.test.echo_ids")
    def echo_ids(job_id: str) -> None:
        seen["request_id"], seen["job_id"] = logs.request_id.get(), logs.job_id.get()
        log.info("working on it")

    with logs.log_context(request="req-worker-1"):
        app.send_task("earshot.test.echo_ids", args=["job-abc"], queue=Queue.BATCH.value)
    assert logs.request_id.get() is None

    stream = io.StringIO()
    logs.configure_logging(settings, stream=stream)
    with app.connection_for_read() as conn:
        message = KombuQueue(Queue.BATCH.value, routing_key=Queue.BATCH.value)(
            conn.default_channel
        ).get(no_ack=True)
        assert message is not None
        Request(message, app=app, task=echo_ids).execute()

    assert seen == {"request_id": "req-worker-1", "job_id": "job-abc"}
    worked = [line for line in json_lines(stream) if line["message"] == "working on it"]
    assert [(w["request_id"], w["job_id"]) for w in worked] == [("req-worker-1", "job-abc")]
    # task_postrun put the worker's context back.
    assert (logs.request_id.get(), logs.job_id.get()) == (None, None)
    app.close()


def test_a_migration_on_start_is_one_line(tmp_path: Path, root_logging: None) -> None:
    from core.migrate import head, upgrade

    stream = io.StringIO()
    logs.configure_logging(Settings(log_format="json"), stream=stream)
    url = f"sqlite:///{tmp_path / 'earshot.db'}"

    upgrade(url)
    upgrade(url)  # the next start: nothing to do, nothing said

    assert [line["message"] for line in json_lines(stream)] == [
        f"job store schema migrated from revision None to {head()}"
    ]


def test_a_worker_keeps_our_handlers_for_its_pool_lines(tmp_path: Path, root_logging: None) -> None:
    settings = Settings(data_dir=tmp_path / "var", log_format="json")
    stream = io.StringIO()
    ours = logs.configure_logging(settings, stream=stream)
    app = make_celery(settings)

    # What `celery worker` does at start, before the pool forks.
    app.log.setup(loglevel="INFO", redirect_stdouts=False)

    from celery.utils.log import get_multiprocessing_logger

    assert logging.getLogger().handlers == [ours]
    pool_logger = get_multiprocessing_logger()
    assert pool_logger is not None
    pool_logger.error("Process 'ForkPoolWorker-1' exited")
    (line,) = json_lines(stream)
    assert line["message"] == "Process 'ForkPoolWorker-1' exited"
    pool_logger.handlers = []
    app.close()
