"""The worker side of the Celery app: the task modules and the bounds of pool processes.

The app itself (broker, queues, routes, serializer) is ``core.broker.make_celery``, shared with
the API, which publishes by task name and never imports a task body.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from core.processes import bound_pool_process
from core.settings import Settings

TASK_MODULES = ["tasks.analyze", "tasks.chunks", "tasks.render", "tasks.webhooks"]


def configure_worker(app: Celery, settings: Settings) -> None:
    """Make ``app`` a worker's: it loads the task modules and bounds each pool process."""
    app.conf.include = TASK_MODULES
    install_pool_bounds(settings)


def install_pool_bounds(settings: Settings) -> None:
    """Each worker pool process, as it starts, dies with its worker and is memory-capped.

    A task that needs more than ``EARSHOT_WORKER_MAX_MEMORY_MB`` fails ``memory_exceeded``
    (tasks.outcomes) instead of pushing the machine into swap or the OOM killer. The handler is
    connected once per process (``dispatch_uid``); it only ever fires in a pool process.
    """

    def _bound(**_: Any) -> None:
        bound_pool_process(max_memory_mb=settings.worker_max_memory_mb)

    worker_process_init.connect(_bound, weak=False, dispatch_uid="earshot.pool_bounds")
