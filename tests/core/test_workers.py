"""Which queues have a warm worker (``/readyz``), and the order a pool takes its queues in."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from kombu import Connection
from kombu import Queue as KombuQueue

from core import workers
from core.names import Priority, Queue
from core.runtime import Runtime
from tests.tasks.conftest import submit


def test_no_queue_is_warm_before_a_pool_announces_itself(runtime: Runtime) -> None:
    assert runtime.warm_queues() == {q.value: False for q in Queue}


def test_an_announced_pool_serves_its_queues_until_it_withdraws(runtime: Runtime) -> None:
    path = workers.announce(
        runtime.settings, "interactive+batch.1@host", [Queue.INTERACTIVE.value, Queue.BATCH.value]
    )
    warm = runtime.warm_queues()
    assert warm[Queue.INTERACTIVE.value] and warm[Queue.BATCH.value]
    assert not warm[Queue.RENDER.value] and not warm[Queue.WEBHOOK.value]

    workers.withdraw(path)
    assert not any(runtime.warm_queues().values())


def test_the_record_of_a_dead_process_counts_for_nothing(runtime: Runtime) -> None:
    # A real process that has exited: its pid is free, as a pool killed by SIGKILL leaves it.
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = workers.announce(runtime.settings, "render.1@host", [Queue.RENDER.value])
    assert path is not None
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pid": int(done.stdout)}))
    assert runtime.warm_queues()[Queue.RENDER.value] is False


def test_a_pool_on_both_queues_takes_the_interactive_job_first(
    runtime: Runtime, wav_bytes: bytes
) -> None:
    # Published first, so a fair rotation or a first-in-first-out order would take it first.
    batch = dataclasses.replace(submit(runtime, wav_bytes), priority=Priority.BATCH.value)
    runtime.publish(batch)
    interactive = dataclasses.replace(
        submit(runtime, wav_bytes + b"\0"), priority=Priority.INTERACTIVE.value
    )
    runtime.publish(interactive)

    taken: list[str] = []
    with Connection(
        runtime.celery.conf.broker_url,
        transport=runtime.celery.conf.broker_transport,
        transport_options=runtime.celery.conf.broker_transport_options,
    ) as conn:
        queues = [KombuQueue(q) for q in (Queue.BATCH.value, Queue.INTERACTIVE.value)]

        def take(body: object, message: object) -> None:
            taken.append(message.headers["id"])  # type: ignore[attr-defined]
            message.ack()  # type: ignore[attr-defined]

        with conn.Consumer(queues, callbacks=[take], accept=["json"]):
            conn.drain_events(timeout=5)
            conn.drain_events(timeout=5)
    assert taken == [interactive.id, batch.id]
