"""The broker connection both sides share: the Celery app, built from Settings.

One factory for producer (API) and consumer (worker): both must agree on serializer, queues,
routes and the broker folder, so neither configures Celery by hand. The result backend is off:
a job's row in the job store is its state. What only a worker needs (its task modules, the
bounds of its pool processes) is added by ``tasks.app.configure_worker``.
"""

from __future__ import annotations

import os
import time
import uuid
import weakref
from queue import Empty
from typing import Any

from celery import Celery, signals
from kombu import Exchange
from kombu import Queue as KombuQueue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

from core import metrics
from core.logs import install_celery_hooks
from core.names import ANALYZE_TASK, RENDER_TASK, WEBHOOK_TASK, Queue
from core.settings import Settings
from core.wakeup import Wakeup

# Seconds to wait for the broker before a publish gives up (the API answers 503 instead of
# hanging the upload request).
PUBLISH_TIMEOUT_S = 4.0

# Seconds a filesystem:// consumer waits at most when a fetch finds nothing it may take (on
# Linux it wakes at once when a message arrives or a slot frees, core.wakeup). kombu's
# default (1 s) also applies while the prefetch limit is reached, so a worker pool waited up
# to a second after every task before taking the next: ~1 short job per second (measured by
# scripts/bench_service.py). At 0.05 s the wait was still ~60 ms per job (an analysis and a
# render, half an interval each on average); at 0.02 s an idle pool, listing the message
# folder this often, uses about half a percent of a core.
EMBEDDED_POLLING_INTERVAL_S = 0.02


def broker_folders(settings: Settings) -> dict[str, str]:
    """Folders of the ``filesystem://`` transport, created if missing.

    Producer and consumer share one message folder (``data_folder_in == data_folder_out``):
    kombu's example swaps in/out for a one-way pipe, but here the API and every worker pool are
    peers on one queue set. Processed messages are moved into a sibling folder on the same file
    system so a claim is an atomic rename (two workers can never both take one message), and
    the reconciler prunes it.
    """
    root = settings.broker_dir.resolve()
    folders = {
        "data_folder_in": root / "messages",
        "data_folder_out": root / "messages",
        "processed_folder": root / "processed",
        "control_folder": root / "control",
    }
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    return {name: str(path) for name, path in folders.items()}


class AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, but a message appears in the folder only once written.

    kombu creates ``<name>.msg`` empty and then writes it; a consumer polling the folder can
    claim and read it in between (its flock is never checked by ``_get``), fail on the empty
    JSON and take the worker down (seen with a chunked job publishing its chunks). Writing under
    a name no queue matches and renaming on the same file system makes the message whole or
    absent.
    """

    # kombu's virtual base and its filesystem channel name the second parameter differently,
    # so no signature satisfies mypy for both; callers pass it positionally.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"
        try:
            with open(partial, "wb") as f:
                f.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _poll(self, cycle: Any, callback: Any, timeout: float | None = None) -> Any:
        """Take the next message of the first queue, in ``Queue`` order, that holds one.

        kombu's virtual channels rotate over their queues (one fetch each, in turn), so a pool
        consuming the interactive and the batch queue took a batch job before a waiting
        interactive one every other time. In ``Queue`` order, an interactive upload waits at
        most for the task the pool is running (`earshot dev`'s interactive pool also takes
        batch jobs while nothing interactive waits).
        """
        rank = {q.value: i for i, q in enumerate(Queue)}
        for queue in sorted(self._active_queues, key=lambda q: rank.get(q, len(rank))):
            try:
                message = self._get(queue)  # type: ignore[no-untyped-call]
            except Empty:
                continue
            return callback(message, queue)
        raise Empty()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)  # type: ignore[no-untyped-call]
        # The pool took back a message's slot: a consumer waiting at its prefetch limit may
        # take the next message now, not a polling interval later.
        self.connection.wakeup.wake()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        self.connection.wakeup.wake()


# Whether this process's worker is shutting down (Celery's SIGTERM/SIGINT handler has run), and
# the wake-ups its consumers wait on. Celery's synchronous loop, which filesystem:// runs, only
# looks at its stop flag between two drains of up to 2 s each, and always drains once more
# after seeing it: an idle `earshot worker` took 4-7 s to stop (and `earshot dev`, whose pools
# stop side by side, as long). A drain now ends at once when the stop begins.
_stopping = False
_waiting: weakref.WeakSet[Wakeup] = weakref.WeakSet()


def _worker_starts(**_: Any) -> None:
    global _stopping
    _stopping = False


def _worker_stops(**_: Any) -> None:
    # Sent from the worker's signal handler, in its main process: a flag and a pipe write.
    global _stopping
    _stopping = True
    for wakeup in list(_waiting):
        wakeup.wake()


signals.worker_init.connect(_worker_starts, weak=False)
signals.worker_shutting_down.connect(_worker_stops, weak=False)


class AtomicFilesystemTransport(filesystem.Transport):
    """The ``filesystem://`` transport with whole-message publishes, whose consumer sleeps
    until a message arrives or a slot frees (``core.wakeup``) rather than a fixed interval."""

    Channel = AtomicFilesystemChannel

    _wakeup: Wakeup | None = None

    @property
    def wakeup(self) -> Wakeup:
        if self._wakeup is None:
            options = self.client.transport_options if self.client is not None else {}
            folder = options.get("data_folder_in") or "."
            self._wakeup = Wakeup(folder)
            _waiting.add(self._wakeup)
        return self._wakeup

    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]
        """kombu's loop (take a message from any channel, else wait and try again), waiting on
        ``wakeup`` for at most a polling interval instead of sleeping it, and ending at once
        (as a timeout) when the worker begins to stop."""
        started = time.monotonic()
        interval = self.polling_interval or EMBEDDED_POLLING_INTERVAL_S
        cycle = self.cycle
        assert cycle is not None  # made by the transport's __init__
        while True:
            if _stopping:
                # Celery's loop reads a timeout as "nothing yet" and then sees its stop flag;
                # a stopping worker takes no new message.
                raise TimeoutError()
            try:
                cycle.get(self._deliver, timeout=timeout)  # type: ignore[no-untyped-call]
                return
            except Empty:
                left = None if timeout is None else timeout - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise TimeoutError() from None
                self.wakeup.wait(interval if left is None else min(interval, left))

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)  # type: ignore[no-untyped-call]
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None


def make_celery(settings: Settings) -> Celery:
    """The Celery app for ``settings``: publishes by task name; a worker adds its tasks."""
    app = Celery("earshot", set_as_current=False)
    transport_options: dict[str, Any]
    if settings.embedded:
        transport_options = {
            **broker_folders(settings),
            "store_processed": True,
            "polling_interval": EMBEDDED_POLLING_INTERVAL_S,
        }
    else:
        # Publisher confirms: a publish returns only once RabbitMQ has the message, so a job is
        # never reported queued for a message the broker dropped.
        transport_options = {"confirm_publish": True}
    exchange = Exchange("earshot", type="direct", durable=True)
    app.conf.update(
        broker_url=settings.effective_broker_url,
        broker_transport=AtomicFilesystemTransport if settings.embedded else None,
        broker_transport_options=transport_options,
        broker_connection_timeout=PUBLISH_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        # A task is acknowledged after it ran, and a worker process killed mid-task (OOM, hard
        # time limit) hands the message back: audio is never lost with a crash.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: a long analysis never holds a second job hostage.
        worker_prefetch_multiplier=1,
        # The hard limit must stay below RabbitMQ's consumer_timeout (30 min by default,
        # `consumer_timeout` in rabbitmq.conf), or the broker closes the channel under a task
        # that is still legitimately running; see README "Settings".
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        task_default_queue=Queue.INTERACTIVE.value,
        task_default_exchange="earshot",
        task_default_routing_key=Queue.INTERACTIVE.value,
        task_queues=[
            KombuQueue(q.value, exchange, routing_key=q.value, durable=True) for q in Queue
        ],
        task_routes={
            ANALYZE_TASK: {"queue": Queue.INTERACTIVE.value},
            RENDER_TASK: {"queue": Queue.RENDER.value},
            WEBHOOK_TASK: {"queue": Queue.WEBHOOK.value},
        },
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
    install_celery_hooks()
    metrics.install_celery_hooks()
    return app
