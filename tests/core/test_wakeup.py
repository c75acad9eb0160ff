"""The embedded broker's consumer wakes when a message lands (inotify) or a slot frees, instead
of sleeping its polling interval (core.wakeup, core.broker).

The polling interval is set to a minute here: a consumer that slept it would not see the
message within the drain's 20-second timeout, so a delivery proves the wake-up works."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from core.broker import AtomicFilesystemTransport
from core.wakeup import Wakeup

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def later(action: object, delay: float = 0.2) -> threading.Timer:
    timer = threading.Timer(delay, action)  # type: ignore[arg-type]
    timer.start()
    return timer


@linux_only
def test_a_file_moved_into_the_folder_wakes_a_wait(tmp_path: Path) -> None:
    wakeup = Wakeup(str(tmp_path))
    try:
        assert wakeup.watching
        part = tmp_path / "m.msg.part"
        part.write_bytes(b"{}")
        timer = later(lambda: os.replace(part, tmp_path / "m.msg"))
        assert wakeup.wait(60.0) is True  # woken by the rename, not the minute
        timer.join()
        assert wakeup.wait(0.01) is False  # the event was drained: nothing pending
    finally:
        wakeup.close()


def test_wake_from_another_thread_ends_a_wait(tmp_path: Path) -> None:
    wakeup = Wakeup(str(tmp_path))
    try:
        timer = later(wakeup.wake)
        assert wakeup.wait(60.0) is True
        timer.join()
        for _ in range(10):  # many wake-ups before a wait: one wait, then quiet
            wakeup.wake()
        assert wakeup.wait(0.01) is True
        assert wakeup.wait(0.01) is False
    finally:
        wakeup.close()


@dataclass
class EmbeddedQueue:
    """A consumer and a producer on one embedded-broker folder, polling once a minute."""

    folders: dict[str, Path]
    consumer: Connection
    publish: Callable[[object], None]
    received: list[object]


@contextlib.contextmanager
def embedded_queue(tmp_path: Path, name: str) -> Iterator[EmbeddedQueue]:
    folders = {kind: tmp_path / kind for kind in ("messages", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    options = {
        "data_folder_in": str(folders["messages"]),
        "data_folder_out": str(folders["messages"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": True,
        "polling_interval": 60.0,
    }
    exchange = Exchange(name, type="direct")
    queue = Queue(f"{name}.q", exchange, routing_key=f"{name}.q")
    received: list[object] = []

    def on_message(body: object, message: object) -> None:
        received.append(body)
        message.ack()  # type: ignore[attr-defined]

    with (
        Connection(transport=AtomicFilesystemTransport, transport_options=options) as consumer,
        Connection(transport=AtomicFilesystemTransport, transport_options=options) as producer,
        Consumer(consumer, queues=[queue], callbacks=[on_message], accept=["json"]),
    ):
        producer_ = Producer(producer.channel(), exchange=exchange, serializer="json")
        yield EmbeddedQueue(
            folders=folders,
            consumer=consumer,
            publish=lambda body: producer_.publish(body, routing_key=f"{name}.q"),
            received=received,
        )


@linux_only
def test_the_consumer_takes_a_message_published_while_it_waits(tmp_path: Path) -> None:
    with embedded_queue(tmp_path, "wake") as q:
        timer = later(lambda: q.publish({"job": 1}))
        q.consumer.drain_events(timeout=20)  # raises TimeoutError if it slept the minute
        timer.join()
    assert q.received == [{"job": 1}]
    assert len(list(q.folders["processed"].iterdir())) == 1


def check_waiters_of_that_job_only(store: Any, changes: Any) -> None:
    """A held request follows one job: another job's change must not make it re-read its row
    (with every waiter woken by every change, four clients cost four reads per change), nor
    must a progress write; a waiter that follows no job wakes on every status change; a
    waiter that wants a job's end only (``finished_only``) sleeps through its start.

    ``store`` is a JobStore and ``changes`` the API's feed of its changes; each status change
    is made by another thread, as a worker process makes it.
    """
    import asyncio
    import time

    def new_job() -> str:
        job, _ = store.create(
            filename="a.wav", size_bytes=1, sha256="0" * 64, profile="fast", priority="batch"
        )
        return str(job.id)

    async def scenario() -> tuple[bool, ...]:
        changes.mark()
        deadline = time.monotonic() + 10
        while not changes.available and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert changes.available
        first, second = new_job(), new_job()
        of_first, of_second, of_any = changes.mark(first), changes.mark(second), changes.mark()
        end_of_first = changes.mark(first, finished_only=True)
        timer = later(lambda: store.claim(first))
        first_woken = await changes.wait(of_first, 60.0)  # False only after the minute
        timer.join()
        any_woken = of_any.is_set()
        start_quiet = await changes.wait(end_of_first, 0.5)  # running is not an end
        timer = later(lambda: store.succeed(first, result_prefix="r/", analyzer_version="x"))
        end_woken = await changes.wait(end_of_first, 60.0)
        timer.join()
        assert (start_quiet, end_woken) == (False, True)
        second_quiet = await changes.wait(of_second, 0.5)
        assert store.claim(second) is not None
        assert await changes.wait(of_second, 60.0)  # the claim (read after it was made)
        of_second = changes.mark(second)  # running now: its next change is the end
        timer = later(lambda: store.update_progress(second, stage="features", percent=50.0))
        progress_quiet = await changes.wait(of_second, 0.5)
        timer.join()
        timer = later(lambda: store.succeed(second, result_prefix="r/", analyzer_version="x"))
        second_woken = await changes.wait(of_second, 60.0)
        timer.join()
        return first_woken, any_woken, second_quiet, progress_quiet, second_woken

    first_woken, any_woken, second_quiet, progress_quiet, second_woken = asyncio.run(scenario())
    assert first_woken is True
    assert any_woken is True  # a waiter that follows no job wakes on every change
    assert second_quiet is False  # the first job's claim did not wake the second's waiter
    assert progress_quiet is False  # a progress write is not a status change
    assert second_woken is True


@linux_only
def test_a_status_change_in_the_sqlite_store_wakes_the_waiters_of_that_job_only(
    tmp_path: Path,
) -> None:
    from core.jobs import JobStore
    from core.wakeup import DatabaseChanges

    db = tmp_path / "earshot.db"
    store = JobStore(f"sqlite:///{db}")
    store.create_schema()
    changes = DatabaseChanges(db)
    try:
        (tmp_path / "unrelated.txt").write_text("x")  # another file of the folder
        check_waiters_of_that_job_only(store, changes)
    finally:
        changes.close()
        store.dispose()


@linux_only
def test_a_stopping_worker_ends_its_wait_and_takes_no_new_message(tmp_path: Path) -> None:
    """Celery's SIGTERM handler sends worker_shutting_down: the drain ends at once (as a
    timeout, which Celery reads as "nothing yet" before it sees its stop flag) instead of
    waiting out its 2 s, twice, and a message published meanwhile stays queued for the next
    worker. Without the stop, the same wait takes that message (the control)."""
    from celery import signals

    with embedded_queue(tmp_path, "stop") as q:

        def stop_then_publish() -> None:
            signals.worker_shutting_down.send(sender="test", sig="SIGTERM", how="Warm", exitcode=0)
            q.publish({"job": 2})

        try:
            timer = later(stop_then_publish)
            with pytest.raises(TimeoutError):
                q.consumer.drain_events(timeout=20)
            timer.join()
            assert q.received == []
            assert len(list(q.folders["messages"].iterdir())) == 1  # still queued
        finally:
            signals.worker_init.send(sender="test")  # the next worker of this process
        q.consumer.drain_events(timeout=20)
    assert q.received == [{"job": 2}]
