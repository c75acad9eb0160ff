"""A typed Python client of the earshot HTTP API (sync; httpx and the standard library only).

    from earshot.client import Client

    Client("http://127.0.0.1:8000", api_key=None).analyze("song.flac")

``client.py`` holds :class:`Client`, ``http.py`` the retrying transport, ``errors.py`` the
errors, ``files.py`` hashes, Idempotency-Keys and atomic writes. ``earshot submit``
(earshot/batch/, earshot/submit_cmd.py) is built on it.
"""

from earshot.client.client import (
    DEFAULT_API_URL,
    FINISHED,
    FORMATS,
    PENDING,
    VIEWS,
    Client,
    result_url,
)
from earshot.client.errors import (
    ApiProblem,
    AuthRejected,
    BatchAborted,
    ClientError,
    Interrupted,
    JobFailed,
    NotAnEarshotApi,
    ServiceUnreachable,
    TransientExhausted,
    UsageError,
    WaitTimeout,
)

__all__ = [
    "DEFAULT_API_URL",
    "FINISHED",
    "FORMATS",
    "PENDING",
    "VIEWS",
    "ApiProblem",
    "AuthRejected",
    "BatchAborted",
    "Client",
    "ClientError",
    "Interrupted",
    "JobFailed",
    "NotAnEarshotApi",
    "ServiceUnreachable",
    "TransientExhausted",
    "UsageError",
    "WaitTimeout",
    "result_url",
]
