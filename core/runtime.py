"""Everything a process needs to serve jobs, built once from Settings.

The API and the workers share this one object: job store, blob store, Celery app, and the
publish step. It never imports the analysis package (the API process stays free of librosa).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from amqp.exceptions import RecoverableConnectionError
from celery import Celery

from analysis.version import ANALYZER_VERSION
from core import workers
from core.blobs import BlobStore, open_blob_store
from core.broker import PUBLISH_TIMEOUT_S, make_celery
from core.errors import BrokerUnavailable
from core.jobs import Job, JobStore
from core.names import ANALYZE_TASK, QUEUE_FOR_PRIORITY, Priority, Queue
from core.settings import Settings

log = logging.getLogger(__name__)


def _stale_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says an open connection was dropped, not refused."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            ConnectionResetError
            | ConnectionAbortedError
            | BrokenPipeError
            | RecoverableConnectionError,
        ):
            return True
        # py-amqp's end of file on a socket the server or the network closed (a partition
        # that reset the connection): a bare OSError without errno. Before, the first upload
        # after such a partition was answered 503 (tests/integration/test_partition.py).
        if type(seen) is OSError and seen.errno is None:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class Runtime:
    """Job store, blob store and Celery app of one process."""

    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    celery: Celery
    analyzer_version: str = ANALYZER_VERSION

    def publish(self, job: Job) -> None:
        """Queue the analysis of ``job`` (its id only; the audio stays in the blob store).

        Raises BrokerUnavailable within about PUBLISH_TIMEOUT_S when the broker cannot take the
        message. No retry here: the caller decides (the API fails the job and answers 503).
        """
        queue = QUEUE_FOR_PRIORITY[Priority(job.priority)]
        for attempt in (1, 2):
            try:
                self.celery.send_task(
                    ANALYZE_TASK,
                    args=[job.id],
                    queue=queue.value,
                    task_id=job.id,
                    retry=False,
                    # Publisher confirms turn a broker-side refusal into an error here, not a
                    # loss.
                    timeout=PUBLISH_TIMEOUT_S,
                    confirm_timeout=PUBLISH_TIMEOUT_S,
                )
                return
            except Exception as exc:  # kombu/amqp raise many types for "broker unreachable"
                if attempt == 1 and _stale_connection(exc):
                    # A pooled connection the broker closed (a restart): only its next use
                    # finds out, and that use reconnects. One more try, not a 503.
                    log.info("publish of job %s: reconnecting after %s", job.id, exc)
                    continue
                log.warning("publish of job %s to %s failed: %s", job.id, queue.value, exc)
                raise BrokerUnavailable(
                    f"cannot publish job {job.id} to {queue.value}: {exc}"
                ) from exc

    def readiness(self) -> dict[str, bool]:
        """Whether each backing service answers right now (for ``/readyz``)."""
        return {
            "broker": self._broker_ready(),
            "database": self._database_ready(),
            "blobs": self._blobs_ready(),
        }

    def warm_queues(self) -> dict[str, bool]:
        """Each queue, and whether a warm worker consumes it (all False if the broker is
        unreachable); see ``core.workers``."""
        try:
            return workers.warm_queues(self.settings, self.celery, PUBLISH_TIMEOUT_S)
        except Exception as exc:
            log.warning("cannot tell which queues have workers: %s", exc)
            return {q.value: False for q in Queue}

    def _broker_ready(self) -> bool:
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=PUBLISH_TIMEOUT_S)
            return True
        except Exception as exc:
            log.warning("broker not ready: %s", exc)
            return False

    def _database_ready(self) -> bool:
        try:
            self.jobs.ping()
            return True
        except Exception as exc:
            log.warning("database not ready: %s", exc)
            return False

    def _blobs_ready(self) -> bool:
        try:
            # A missing key answering False proves the store is reachable and listable.
            self.blobs.exists("readyz/probe")
            return True
        except Exception as exc:
            log.warning("blob store not ready: %s", exc)
            return False

    def close(self) -> None:
        self.jobs.dispose()
        self.celery.close()


def build_runtime(settings: Settings) -> Runtime:
    """The runtime of ``settings``; in embedded mode, also the data folders and the schema."""
    if settings.embedded or settings.database_url is None or settings.blob_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.database_url is None:
        # The embedded SQLite file is ours to keep at the newest schema; a configured database
        # is migrated by `earshot migrate` (the operator decides when a schema changes).
        from core.migrate import upgrade

        upgrade(settings.effective_database_url)
    jobs = JobStore(settings.effective_database_url)
    blobs = open_blob_store(
        settings.effective_blob_url,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )
    celery = make_celery(settings)
    runtime = Runtime(settings=settings, jobs=jobs, blobs=blobs, celery=celery)
    # Workers find the runtime through their Celery app (see tasks.steps.runtime_of).
    celery.earshot_runtime = runtime
    return runtime
