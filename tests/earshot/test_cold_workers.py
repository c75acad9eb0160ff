"""``earshot submit`` tells "workers starting" from the API's ``/readyz`` (the real app, served)."""

from __future__ import annotations

from core import workers
from core.names import Queue
from earshot.submit_cmd import cold_queues
from tests.earshot.test_client import Served, served

__all__ = ["served"]


def test_cold_queues_are_those_without_a_warm_worker(served: Served) -> None:
    assert cold_queues(served.url, timeout=5) == {q.value for q in Queue}

    workers.announce(
        served.runtime.settings, "interactive.1@host", [Queue.INTERACTIVE.value, Queue.BATCH.value]
    )
    assert cold_queues(served.url, timeout=5) == {Queue.RENDER.value, Queue.WEBHOOK.value}


def test_no_answer_means_nothing_to_report() -> None:
    # Port 1 on loopback: refused; the submit run then reports its own connection error.
    assert cold_queues("http://127.0.0.1:1", timeout=1) == set()
