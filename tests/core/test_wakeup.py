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


@linux_only
def test_a_write_to_the_sqlite_store_wakes_a_held_status_request(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    from core.wakeup import DatabaseChanges

    db = tmp_path / "earshot.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE jobs (id TEXT, status TEXT)")

    def write() -> None:
        # Another connection, as a worker process writes: its WAL append is what wakes.
        with contextlib.closing(sqlite3.connect(db)) as other, other:
            other.execute("INSERT INTO jobs VALUES ('a', 'succeeded')")

    async def scenario() -> tuple[bool, bool]:
        changes = DatabaseChanges(db)
        assert changes.available
        try:
            (tmp_path / "unrelated.txt").write_text("x")  # another file of the folder
            quiet = await changes.changed(0.3)
            timer = later(write)
            woken = await changes.changed(60.0)  # woken by the write, not the minute
            timer.join()
            return quiet, woken
        finally:
            changes.close()

    quiet, woken = asyncio.run(scenario())
    assert quiet is False
    assert woken is True


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
