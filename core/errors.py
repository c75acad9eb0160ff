"""Errors of the task layer (job store, blob store, configuration)."""

from __future__ import annotations


class EarshotTaskError(Exception):
    """Raised when the task layer cannot do what was asked; base of this module."""


class ConfigurationError(EarshotTaskError):
    """Raised when a setting is invalid (unknown URL scheme, missing credential)."""


class BlobNotFound(EarshotTaskError):
    """Raised when a blob key does not exist in the blob store."""


class JobNotFound(EarshotTaskError):
    """Raised when a job id does not exist (or belongs to another API key)."""


class TooManyActiveJobs(EarshotTaskError):
    """Raised when creating a job would exceed its owner's limit of queued + running jobs."""

    def __init__(self, *, active: int, limit: int) -> None:
        super().__init__(
            f"{active} jobs are queued or running for this owner; the limit is {limit}"
        )
        self.active = active
        self.limit = limit


class TransientStoreError(EarshotTaskError):
    """Raised when the database or object store is briefly unreachable; retried."""


class BrokerUnavailable(EarshotTaskError):
    """Raised when a message cannot be published because the broker is unreachable."""


class CallbackRefused(EarshotTaskError):
    """Raised when a webhook callback URL breaks a rule or names an address it may not reach."""


class JobCanceled(EarshotTaskError):
    """Raised inside a running analysis when its job was canceled; stops the work early."""


class DataDirBusy(EarshotTaskError):
    """Raised when another ``earshot dev`` holds the data dir's lock."""
