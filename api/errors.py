"""Errors of the HTTP layer: each one is answered as an RFC 9457 problem (see api/problems.py).

Every class carries its HTTP status, its stable ``code`` (the last segment of its ``type`` URI)
and a short human title; the detail is the message the error is raised with.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """Raised when a request cannot be served; base of this module, answered as a problem."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


class InvalidCursor(ApiError):
    """Raised when a list cursor was not made by this service."""

    status, code, title = 400, "invalid_cursor", "Invalid cursor"


class Unauthorized(ApiError):
    """Raised when an API key is required and missing or unknown."""

    status, code, title = 401, "unauthorized", "Missing or unknown API key"


class NotFound(ApiError):
    """Raised when an analysis id (or a route) does not exist for this caller."""

    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(ApiError):
    """Raised when a route exists but not for the request's method."""

    status, code, title = 405, "method_not_allowed", "Method not allowed"


class NotFinished(ApiError):
    """Raised when a result is asked for while its job is still queued or running."""

    status, code, title = 409, "not_finished", "Analysis not finished"


class JobFailed(ApiError):
    """Raised when a result is asked for a job that failed; the problem carries its error."""

    status, code, title = 409, "job_failed", "Analysis failed"


class JobCanceled(ApiError):
    """Raised when a result is asked for a job that was canceled."""

    status, code, title = 409, "job_canceled", "Analysis canceled"


class AlreadyFinished(ApiError):
    """Raised when canceling a job that has already finished."""

    status, code, title = 409, "already_finished", "Analysis already finished"


class UploadTimeout(ApiError):
    """Raised when an upload sends no body bytes for EARSHOT_UPLOAD_IDLE_TIMEOUT_S seconds."""

    status, code, title = 408, "upload_timeout", "Upload timed out"


class UploadTooLarge(ApiError):
    """Raised when an upload exceeds EARSHOT_MAX_UPLOAD_BYTES (checked while streaming)."""

    status, code, title = 413, "upload_too_large", "Upload too large"


class UnsupportedMediaType(ApiError):
    """Raised when the uploaded bytes are not a known audio container, whatever their name."""

    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InvalidRequest(ApiError):
    """Raised when a request is malformed: missing file part, bad form field, bad multipart."""

    status, code, title = 422, "invalid_request", "Invalid request"


class InvalidCallbackUrl(ApiError):
    """Raised when a callback_url breaks a URL rule or its host is not a public address."""

    status, code, title = 422, "invalid_callback_url", "Invalid callback URL"


class IdempotencyKeyReused(ApiError):
    """Raised when an Idempotency-Key is sent again with different content or profile."""

    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"


class TooManyJobs(ApiError):
    """Raised when a caller already has EARSHOT_MAX_CONCURRENT_JOBS_PER_KEY jobs in flight."""

    status, code, title = 429, "too_many_jobs", "Too many active analyses"


class BrokerUnavailable(ApiError):
    """Raised when the job could not be queued because the broker is unreachable."""

    status, code, title = 503, "broker_unavailable", "Queue unavailable"


class TooManyUploads(ApiError):
    """Raised when EARSHOT_MAX_CONCURRENT_UPLOADS uploads are already streaming (before reading)."""

    status, code, title = 503, "too_many_uploads", "Too many uploads in progress"


class NotReady(ApiError):
    """Raised when a dependency (broker, database, blob store) is not ready."""

    status, code, title = 503, "not_ready", "Service not ready"


class StoreUnavailable(ApiError):
    """Raised when the job store or blob store is briefly unreachable."""

    status, code, title = 503, "store_unavailable", "Storage unavailable"


class PlotPending(ApiError):
    """Raised when a plot of a succeeded analysis is still being drawn."""

    status, code, title = 409, "plot_pending", "Plot not drawn yet"


class PlotUnavailable(ApiError):
    """Raised when a plot of a succeeded analysis could not be drawn (the result is unaffected)."""

    status, code, title = 404, "plot_unavailable", "Plot unavailable"


class AudioUnavailable(ApiError):
    """Raised when an analysis's uploaded audio is no longer stored (canceled or failed job)."""

    status, code, title = 404, "audio_unavailable", "Audio unavailable"


class RangeNotSatisfiable(ApiError):
    """Raised when no range of a Range header lies within the file (or there are too many)."""

    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"
