"""Errors of the earshot client, rooted in :class:`ClientError`."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Raised when the client cannot do what it was asked; base of every error here."""


class UsageError(ClientError):
    """Raised when the caller names no input, a missing path, colliding outputs or a bad URL."""


class ApiProblem(ClientError):
    """Raised when the API answers a request with a problem document that retrying won't fix."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class TransientExhausted(ClientError):
    """Raised when a request still fails transiently after the last allowed retry."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class BatchAborted(ClientError):
    """Raised when a failure would repeat for every request, so a whole batch stops."""


class AuthRejected(BatchAborted):
    """Raised when the API rejects the API key (401/403): every other request would fail too."""


class ServiceUnreachable(BatchAborted):
    """Raised when no connection to the API could be made after the last allowed retry."""


class NotAnEarshotApi(ClientError):
    """Raised when the base URL answers, but not as an earshot API does (wrong host/port/path)."""


class Interrupted(ClientError):
    """Raised when the client's stop event is set (Ctrl-C or SIGTERM in ``earshot submit``)."""


class WaitTimeout(ClientError):
    """Raised when a job is still queued or running when ``Client.wait``'s timeout ends."""

    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        super().__init__(f"job {job.get('id')} still {job.get('status')} after {timeout:g} s")
        self.job = job


class JobFailed(ClientError):
    """Raised when ``Client.analyze`` waited for a job that ended failed or canceled."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        code = str(error.get("code") or job.get("status"))
        message = str(error.get("message") or f"job ended {job.get('status')}")
        super().__init__(f"job {job.get('id')} {job.get('status')}: {code}: {message}")
        self.job = job
        self.code = code
        self.message = message
