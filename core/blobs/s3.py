"""Blobs in S3-compatible object storage (AWS S3, SeaweedFS, Garage, moto).

The scaled-out blob store: API and workers on different hosts share one bucket. Keys under
an optional prefix (``s3://earshot/blobs`` stores ``uploads/<id>`` as ``blobs/uploads/<id>``).
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Buffer, Iterable, Iterator
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import boto3
import botocore.exceptions
from botocore.config import Config

from core.blobs.base import CHUNK_BYTES, BlobStore, check_key, read_upto
from core.errors import BlobNotFound, ConfigurationError, TransientStoreError

# S3 needs every part but the last to be at least 5 MiB; 8 MiB is boto3's own default and
# keeps a worker's upload buffer small. At most 10,000 parts: blobs up to 78 GiB.
PART_BYTES = 8 * 1024 * 1024

# delete_objects takes at most this many keys per request.
DELETE_BATCH = 1000

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
)

_OPTION_NAMES = ("endpoint_url", "region", "access_key_id", "secret_access_key", "create_bucket")

_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _client_error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


@contextlib.contextmanager
def _translated(bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn botocore's errors into the task layer's: not found, transient, misconfigured."""
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code, status = _client_error_code(exc)
        if code == "NoSuchBucket":
            raise ConfigurationError(
                f"bucket {bucket!r} does not exist and creating it is disabled "
                "(create_bucket=false in EARSHOT_BLOB_URL)"
            ) from exc
        if key is not None and (code in _NOT_FOUND_CODES or status == 404):
            raise BlobNotFound(f"blob {key!r} not found ({where})") from None
        if code in _CREDENTIAL_CODES or status == 403:
            raise ConfigurationError(
                f"object store refused {where}: {code} (check EARSHOT_S3_ACCESS_KEY_ID and "
                "EARSHOT_S3_SECRET_ACCESS_KEY)"
            ) from exc
        if code in _TRANSIENT_CODES or status >= 500:
            raise TransientStoreError(f"object store error on {where}: {code} ({status})") from exc
        raise
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError):
        raise ConfigurationError(
            f"no S3 credentials for {where} (set EARSHOT_S3_ACCESS_KEY_ID and "
            "EARSHOT_S3_SECRET_ACCESS_KEY)"
        ) from None
    except (
        botocore.exceptions.ConnectionError,
        botocore.exceptions.HTTPClientError,
        botocore.exceptions.IncompleteReadError,
    ) as exc:
        raise TransientStoreError(f"object store unreachable for {where}: {exc}") from exc


class _Body(Protocol):
    """What ``_BodyReader`` uses of a botocore ``StreamingBody`` (botocore is untyped)."""

    def read(self, amt: int | None = None) -> bytes: ...

    def close(self) -> None: ...


class _BodyReader(io.RawIOBase):
    """A botocore StreamingBody as a raw binary file, so it can be buffered like any other."""

    def __init__(self, body: _Body, bucket: str, key: str) -> None:
        self._body = body
        self._bucket = bucket
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        with _translated(self._bucket, self._key):
            data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore(BlobStore):
    """Blobs as objects in one bucket, under an optional key prefix.

    Writes are atomic as S3 makes them: a single ``put_object``, or a multipart upload that
    becomes visible only when completed and is aborted on any error.
    """

    def __init__(
        self, client: Any, bucket: str, prefix: str = "", *, create_bucket: bool = True
    ) -> None:
        if not bucket:
            raise ConfigurationError("S3 blob store needs a bucket name (s3://bucket/prefix)")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.create_bucket = create_bucket
        self._bucket_checked = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: str | bool | None) -> S3BlobStore:
        """The store for ``s3://bucket/prefix``.

        Options are the Settings fields, with or without their ``s3_`` prefix:
        ``endpoint_url`` (``s3_endpoint_url``), ``region`` (``s3_region``),
        ``access_key_id`` (``s3_access_key_id``), ``secret_access_key``
        (``s3_secret_access_key``), and ``create_bucket`` (default true; also settable as
        ``?create_bucket=false`` in the URL). Unset credentials fall back to boto3's own
        chain (environment, instance profile).
        """
        parsed = urlparse(url)
        if parsed.scheme != "s3":
            raise ConfigurationError(f"not an S3 blob URL: {url!r}")
        values: dict[str, str | bool | None] = {}
        for name, value in options.items():
            plain = name.removeprefix("s3_")
            if plain not in _OPTION_NAMES:
                raise ConfigurationError(
                    f"unknown S3 option {name!r}; expected one of {', '.join(_OPTION_NAMES)}"
                )
            values[plain] = value
        query = parse_qs(parsed.query)
        if "create_bucket" in query:
            values["create_bucket"] = query["create_bucket"][-1]
        create = values.get("create_bucket")
        create_bucket = (
            True
            if create is None
            else (create if isinstance(create, bool) else create.lower() not in _FALSE_WORDS)
        )
        endpoint_url = values.get("endpoint_url") or None
        region = values.get("region") or "us-east-1"
        client = make_client(
            endpoint_url=str(endpoint_url) if endpoint_url else None,
            region=str(region),
            access_key_id=_str_or_none(values.get("access_key_id")),
            secret_access_key=_str_or_none(values.get("secret_access_key")),
        )
        return cls(
            client, parsed.netloc, unquote(parsed.path).strip("/"), create_bucket=create_bucket
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        with self._bucket_lock:
            if self._bucket_checked:
                return
            with _translated(self.bucket):
                try:
                    self.client.head_bucket(Bucket=self.bucket)
                except botocore.exceptions.ClientError as exc:
                    code, status = _client_error_code(exc)
                    if not (self.create_bucket and (status == 404 or code in _NOT_FOUND_CODES)):
                        if status == 404:
                            raise ConfigurationError(
                                f"bucket {self.bucket!r} does not exist and creating it is "
                                "disabled (create_bucket=false in EARSHOT_BLOB_URL)"
                            ) from None
                        raise
                    self._create_bucket()
            self._bucket_checked = True

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        # us-east-1 is the one region that rejects an explicit location constraint.
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except botocore.exceptions.ClientError as exc:
            # Another process (API and workers start together) may have won the race.
            code, _ = _client_error_code(exc)
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        full_key = self._key(key)
        self._ensure_bucket()
        buffer = bytearray()
        written = 0
        iterator = iter(chunks)
        # Read until one part is full: a blob smaller than a part is a single put_object.
        for chunk in iterator:
            buffer += chunk
            written += len(chunk)
            if len(buffer) >= PART_BYTES:
                break
        else:
            with _translated(self.bucket, full_key):
                self.client.put_object(Bucket=self.bucket, Key=full_key, Body=bytes(buffer))
            return written
        return self._put_multipart(full_key, buffer, iterator, written)

    def _put_multipart(
        self, full_key: str, buffer: bytearray, rest: Iterator[bytes], written: int
    ) -> int:
        with _translated(self.bucket, full_key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key)[
                "UploadId"
            ]
        parts: list[dict[str, Any]] = []

        def upload_part(data: bytes) -> None:
            number = len(parts) + 1
            response = self.client.upload_part(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": response["ETag"]})

        try:
            with _translated(self.bucket, full_key):
                while True:
                    while len(buffer) >= PART_BYTES:
                        upload_part(bytes(buffer[:PART_BYTES]))
                        del buffer[:PART_BYTES]
                    chunk = next(rest, None)
                    if chunk is None:
                        break
                    buffer += chunk
                    written += len(chunk)
                if buffer or not parts:
                    upload_part(bytes(buffer))
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            # An unfinished upload is invisible but its parts are billed and kept until
            # aborted; a failing abort must not hide the original error.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id
                )
            raise
        return written

    def open(self, key: str) -> BinaryIO:
        full_key = self._key(key)
        self._ensure_bucket()
        with _translated(self.bucket, key):
            response = self.client.get_object(Bucket=self.bucket, Key=full_key)
        return io.BufferedReader(_BodyReader(response["Body"], self.bucket, key), CHUNK_BYTES)

    def iter_range(
        self, key: str, start: int, length: int, chunk_size: int = CHUNK_BYTES
    ) -> Iterator[bytes]:
        # A ranged GET: the store sends only these bytes (a seek on the body would read
        # and drop everything before them).
        if length <= 0:
            return
        full_key = self._key(key)
        self._ensure_bucket()
        with _translated(self.bucket, key):
            response = self.client.get_object(
                Bucket=self.bucket, Key=full_key, Range=f"bytes={start}-{start + length - 1}"
            )
        with io.BufferedReader(_BodyReader(response["Body"], self.bucket, key), chunk_size) as f:
            yield from read_upto(f, length, chunk_size)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        full_key = self._key(key)
        self._ensure_bucket()
        with _translated(self.bucket, key):
            response = self.client.head_object(Bucket=self.bucket, Key=full_key)
        return int(response["ContentLength"])

    def delete(self, key: str) -> None:
        full_key = self._key(key)
        self._ensure_bucket()
        with _translated(self.bucket, key):
            self.client.delete_object(Bucket=self.bucket, Key=full_key)

    def delete_prefix(self, prefix: str) -> None:
        # Same meaning as the local store: ``results/abc`` removes the blob ``results/abc``
        # and everything below ``results/abc/``, never ``results/abcd``.
        base = self._key(prefix.rstrip("/"))
        self._ensure_bucket()
        with _translated(self.bucket, prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            batch: list[dict[str, str]] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for item in page.get("Contents", []):
                    name = item["Key"]
                    if name == base or name.startswith(base + "/"):
                        batch.append({"Key": name})
                    if len(batch) == DELETE_BATCH:
                        self._delete_batch(batch)
                        batch = []
            if batch:
                self._delete_batch(batch)

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise TransientStoreError(
                f"object store kept {len(errors)} of {len(batch)} blobs on delete, first "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )


def make_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    max_attempts: int = 3,
) -> Any:
    """A boto3 S3 client set up for S3-compatible servers as well as AWS."""
    config = Config(
        region_name=region,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # Self-hosted stores are addressed by host:port, where virtual-host buckets cannot
        # resolve; AWS itself takes either.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # Newer botocore adds CRC checksums to every upload by default, which several
        # S3-compatible servers reject or mishandle on multipart uploads.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


def _str_or_none(value: str | bool | None) -> str | None:
    return None if value is None or value == "" else str(value)
