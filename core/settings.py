"""Every knob of the service, read once from ``EARSHOT_*`` environment variables.

Defaults are the embedded mode: no servers, everything under ``EARSHOT_DATA_DIR``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EARSHOT_", extra="ignore")

    data_dir: Path = Field(
        Path("var"), description="Root of the embedded state: broker folder, SQLite file, blobs."
    )
    broker_url: str | None = Field(
        None, description="Celery broker; default `filesystem://` under the data dir."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the job store; default SQLite under the data dir."
    )
    blob_url: str | None = Field(
        None, description="Blob store: `file:///path` or `s3://bucket/prefix`; default local."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint URL.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_access_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: str | None = Field(None, description="S3 secret access key.")

    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest accepted upload.")
    max_concurrent_uploads: int = Field(
        16, ge=1, description="Uploads one API process streams at once; more are answered 503."
    )
    upload_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds an upload may send no body bytes before it is dropped (408).",
    )
    max_duration_s: float = Field(4 * 3600.0, description="Longest accepted audio, seconds.")
    max_sample_rate: int = Field(384_000, description="Highest accepted sample rate, Hz.")
    max_channels: int = Field(32, description="Most accepted channels.")
    max_decoded_bytes: int = Field(
        8 * 1024**3, description="Most bytes the decoded audio may take (float32, native rate)."
    )

    task_soft_time_limit_s: int = Field(1500, description="Soft time limit of one analysis task.")
    task_time_limit_s: int = Field(1700, description="Hard time limit (below broker timeout).")
    task_max_attempts: int = Field(3, description="Deliveries before a job is failed for good.")
    worker_concurrency: int = Field(1, description="Processes per worker pool.")
    chunk_min_duration_s: float = Field(
        1200.0, description="Files longer than this are analysed in chunks by several workers."
    )
    chunk_duration_s: float = Field(600.0, description="Seconds of audio per chunk.")
    chunk_overlap_s: float = Field(
        1.0, description="Seconds decoded before a chunk's span to settle the filters."
    )
    status_wait_max_s: float = Field(
        30.0,
        ge=0,
        description="Longest a `GET /v1/analyses/{id}?wait=` holds its answer, seconds.",
    )
    worker_max_memory_mb: int = Field(
        2048, description="A worker process is replaced after a task leaves it above this RSS."
    )

    api_keys: str | None = Field(
        None, description="Comma-separated API keys; unset = open service on 127.0.0.1 only."
    )
    api_keys_file: Path | None = Field(None, description="File with one API key per line.")
    max_concurrent_jobs_per_key: int = Field(64, description="Queued+running jobs per key.")
    webhook_secret: str | None = Field(None, description="Standard Webhooks signing secret.")
    webhook_allow: str | None = Field(
        None,
        description="Comma-separated hosts, addresses and CIDRs webhooks may reach although "
        "they are not public (loopback, private, link-local …); unset = public addresses only.",
    )
    webhook_concurrency: int = Field(8, ge=1, description="Threads of a webhook worker pool.")
    webhook_per_host: int = Field(
        2, ge=1, description="Deliveries in flight to one receiver host per webhook pool."
    )

    log_format: str = Field("auto", description="`json`, `pretty` or `auto` (pretty on a tty).")
    log_level: str = Field("INFO", description="Log level.")

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow_parses(cls, value: str | None) -> str | None:
        # A typo fails every process at start, not each upload (500) or delivery later.
        if value:
            from core.webhooks import allowlist

            allowlist(value)
        return value

    @property
    def embedded(self) -> bool:
        return self.broker_url is None or self.broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'earshot.db').resolve()}"

    @property
    def effective_blob_url(self) -> str:
        if self.blob_url:
            return self.blob_url
        return (self.data_dir / "blobs").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
