"""Webhooks: tell a job's ``callback_url`` that the job ended, signed per Standard Webhooks.

Each notification is one POST of a JSON body with the headers ``webhook-id`` (the same on
every attempt, so a receiver can drop duplicates), ``webhook-timestamp`` (seconds since the
epoch, of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with ``EARSHOT_WEBHOOK_SECRET`` (``whsec_<base64 key>``).
Delivery is at least once: a non-2xx answer or a network error is retried with exponential
backoff, and every attempt is recorded on the job (``extra["webhook_deliveries"]``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from celery import Task, shared_task

from tasks.errors import ConfigurationError, JobNotFound
from tasks.jobs import Job
from tasks.names import WEBHOOK_TASK, JobStatus, Queue
from tasks.runtime import Runtime

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
EXTRA_KEY = "webhook_deliveries"
# Attempts kept on the job: enough to debug a receiver, bounded so the row stays small.
MAX_RECORDED = 20
TIMEOUT_S = 10.0
# Retries after the first attempt, 5 s apart doubling up to an hour: about 21 minutes in all
# for the default 8, long enough to ride out a receiver's deploy or restart.
MAX_RETRIES = 8
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 3600.0
USER_AGENT = "earshot-webhooks/1"

EVENT_OF_STATUS = {
    JobStatus.SUCCEEDED: "analysis.succeeded",
    JobStatus.FAILED: "analysis.failed",
    JobStatus.CANCELED: "analysis.canceled",
}


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST to a receiver."""

    attempt: int
    at: str
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional, as in the spec)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigurationError(
            "EARSHOT_WEBHOOK_SECRET must be `whsec_` followed by a base64 key, e.g. "
            "whsec_" + base64.b64encode(b"\x00" * 24).decode()
        )
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def message_id(job: Job) -> str:
    # A job ends once, so one message per job: retries reuse the id, receivers dedupe on it.
    return f"msg_{job.id}"


def payload(job: Job) -> dict[str, Any]:
    """The body of the notification that ``job`` ended (Standard Webhooks' type/timestamp/data)."""
    own = f"/v1/analyses/{job.id}"
    done = job.status is JobStatus.SUCCEEDED
    ended = job.finished_at or job.updated_at
    return {
        "type": EVENT_OF_STATUS.get(job.status, f"analysis.{job.status.value}"),
        "timestamp": ended.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "id": job.id,
            "status": job.status.value,
            "filename": job.filename,
            "sha256": job.sha256,
            "profile": job.profile,
            "cached": job.cached,
            "error": (
                {"code": job.error_code, "message": job.error_message or ""}
                if job.status is JobStatus.FAILED and job.error_code
                else None
            ),
            "links": {
                "self": own,
                "result": f"{own}/result" if done else None,
                "waveform": f"{own}/waveform.json" if done else None,
                "spectrogram": f"{own}/spectrogram.png" if done else None,
            },
        },
    }


def deliveries(job: Job) -> list[dict[str, Any]]:
    """The attempts recorded on ``job``, oldest first."""
    recorded = job.extra.get(EXTRA_KEY, [])
    return list(recorded) if isinstance(recorded, list) else []


def record(runtime: Runtime, job_id: str, attempt: Attempt) -> None:
    # Read-modify-write of the extra column is safe here because one job has one notification,
    # and its attempts run one after another (a retry is scheduled only after this returns).
    job = runtime.jobs.get(job_id)
    history = [*deliveries(job), asdict(attempt)][-MAX_RECORDED:]
    runtime.jobs.set_extra(job_id, {**job.extra, EXTRA_KEY: history})


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
    """POST once; ``(status_code, None)`` or ``(None, error)`` for a network failure."""
    try:
        # Redirects are not followed: a signed body must reach the URL the user gave.
        response = httpx.post(
            url, content=body, headers=headers, timeout=TIMEOUT_S, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    return response.status_code, None


def deliver(runtime: Runtime, job_id: str, *, attempt: int, secret: str | None) -> Attempt | None:
    """Send the notification of a finished job once and record the attempt.

    Returns None when there is nothing to send (no callback URL, job missing or unfinished).
    """
    try:
        job = runtime.jobs.get(job_id)
    except JobNotFound:
        log.warning("webhook for job %s dropped: no such job", job_id)
        return None
    if not job.callback_url or not job.status.finished:
        return None
    body = json.dumps(payload(job), ensure_ascii=False, separators=(",", ":")).encode()
    msg_id = message_id(job)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        headers["webhook-signature"] = signature(secret_key(secret), msg_id, timestamp, body)
    status_code, error = post(job.callback_url, body, headers)
    if status_code is not None and not 200 <= status_code < 300:
        error = f"receiver answered {status_code}"
    outcome = Attempt(
        attempt=attempt,
        at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        status_code=status_code,
        error=error,
    )
    record(runtime, job_id, outcome)
    return outcome


def backoff_s(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 5, 10, 20 … capped at an hour."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**retries))


def enqueue_webhook(runtime: Runtime, job: Job) -> None:
    """Queue the notification that ``job`` ended, if it has a callback URL.

    Never raises: a notification that cannot be queued is logged, and the job is unaffected.
    """
    if not job.callback_url:
        return
    try:
        runtime.celery.send_task(WEBHOOK_TASK, args=[job.id], queue=Queue.RENDER.value, retry=False)
    except Exception as exc:  # kombu raises many types for "broker unreachable"
        log.warning("webhook of job %s not queued: %s", job.id, exc)


@shared_task(name=WEBHOOK_TASK, bind=True, ignore_result=True, acks_late=True)
def webhook(self: Task, job_id: str) -> bool:
    """POST the end of job ``job_id`` to its callback URL, retrying with backoff."""
    from tasks.analyze import runtime_of

    runtime = runtime_of(self)
    retries = int(self.request.retries or 0)
    outcome = deliver(runtime, job_id, attempt=retries + 1, secret=runtime.settings.webhook_secret)
    if outcome is None or outcome.ok:
        return outcome is not None
    if retries >= MAX_RETRIES:
        log.warning("webhook of job %s given up after %d attempts", job_id, retries + 1)
        return False
    countdown = backoff_s(retries)
    log.info("webhook of job %s failed (%s); retry in %.0f s", job_id, outcome.error, countdown)
    raise self.retry(countdown=countdown, max_retries=MAX_RETRIES)
