"""Blob store behaviour, run against both real backends: a local directory and S3 (moto server).

The S3 half talks HTTP to a moto server in a subprocess, so requests, XML parsing, multipart
bookkeeping and error codes are the real ones, not an in-process mock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.blobs import BlobStore, LocalBlobStore, open_blob_store
from core.blobs.s3 import PART_BYTES, S3BlobStore, make_client
from core.errors import BlobNotFound, ConfigurationError, TransientStoreError
from tests.s3server import S3Server, free_port, s3_server

__all__ = ["s3_server"]  # the fixture is used by name; re-exported so ruff keeps the import

MIB = 1024 * 1024


class Boom(RuntimeError):
    """Raised by a test's chunk generator midway through an upload."""


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261124)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    server: S3Server = request.getfixturevalue("s3_server")
    return open_blob_store(server.blob_url(), **server.options())


@pytest.fixture
def s3_store(s3_server: S3Server) -> S3BlobStore:
    store = S3BlobStore.from_url(s3_server.blob_url(), **s3_server.options())
    assert isinstance(store, S3BlobStore)
    return store


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_small_blob_round_trip(store: BlobStore) -> None:
    assert store.put_bytes("results/j1/summary.json", b'{"bpm": 120.0}') == 14
    assert store.get_bytes("results/j1/summary.json") == b'{"bpm": 120.0}'
    assert store.size("results/j1/summary.json") == 14
    assert store.exists("results/j1/summary.json")


def test_empty_blob_round_trip(store: BlobStore) -> None:
    assert store.put_stream("uploads/empty", iter([])) == 0
    assert store.exists("uploads/empty")
    assert store.size("uploads/empty") == 0
    assert store.get_bytes("uploads/empty") == b""


def test_overwrite_replaces_whole_blob(store: BlobStore) -> None:
    store.put_bytes("uploads/a", b"first version, longer")
    store.put_bytes("uploads/a", b"second")
    assert store.get_bytes("uploads/a") == b"second"


@pytest.mark.parametrize(
    "n_bytes", [2 * PART_BYTES + 3 * MIB + 17, 2 * PART_BYTES], ids=["ragged", "whole-parts"]
)
def test_large_blob_round_trip(store: BlobStore, rng: random.Random, n_bytes: int) -> None:
    data = rng.randbytes(n_bytes)
    # Odd chunk sizes so part boundaries never line up with chunk boundaries.
    assert store.put_stream("uploads/big.wav", chunked(data, 3 * MIB + 5)) == n_bytes
    assert store.size("uploads/big.wav") == n_bytes
    assert store.get_bytes("uploads/big.wav") == data


def test_streaming_read(store: BlobStore, rng: random.Random) -> None:
    data = rng.randbytes(3 * MIB + 100)
    store.put_bytes("uploads/stream", data)
    with store.open("uploads/stream") as f:
        assert f.readable()
        head = f.read(10)
        rest = f.read()
    assert head + rest == data
    chunks = list(store.iter_chunks("uploads/stream", chunk_size=MIB))
    assert [len(c) for c in chunks] == [MIB, MIB, MIB, 100]
    assert b"".join(chunks) == data


def test_range_reads_are_the_bytes_at_those_offsets(store: BlobStore, rng: random.Random) -> None:
    data = rng.randbytes(2 * MIB + 77)
    store.put_bytes("uploads/ranged", data)
    # First byte, one across a chunk boundary, the tail, and one running past the end.
    for start, length in [(0, 1), (MIB - 5, 10), (2 * MIB, 77), (2 * MIB + 70, 500), (9, 0)]:
        chunks = list(store.iter_range("uploads/ranged", start, length, chunk_size=4096))
        assert b"".join(chunks) == data[start : start + length], (start, length)
        assert all(len(c) <= 4096 for c in chunks)
    with pytest.raises(BlobNotFound):
        next(store.iter_range("uploads/missing", 0, 10))


def test_local_path_holds_the_blob(store: BlobStore) -> None:
    store.put_bytes("uploads/clip", b"RIFF....WAVEfmt ")
    with store.local_path("uploads/clip", suffix=".wav") as path:
        assert path.read_bytes() == b"RIFF....WAVEfmt "
        if isinstance(store, S3BlobStore):
            assert path.suffix == ".wav"
    if isinstance(store, S3BlobStore):
        assert not path.exists(), "the temporary download must be removed on exit"


def test_delete(store: BlobStore) -> None:
    store.put_bytes("uploads/gone", b"x")
    store.delete("uploads/gone")
    assert not store.exists("uploads/gone")
    store.delete("uploads/gone")  # deleting a missing blob is not an error


def test_delete_prefix_removes_that_subtree_only(store: BlobStore) -> None:
    for key in ("results/abc/summary.json", "results/abc/frames/chroma.npy", "results/abcd/x"):
        store.put_bytes(key, b"1")
    store.put_bytes("uploads/abc", b"2")
    store.delete_prefix("results/abc")
    assert not store.exists("results/abc/summary.json")
    assert not store.exists("results/abc/frames/chroma.npy")
    assert store.exists("results/abcd/x")
    assert store.exists("uploads/abc")
    store.delete_prefix("results/nothing-here")


def test_missing_blob(store: BlobStore) -> None:
    assert not store.exists("uploads/missing")
    with pytest.raises(BlobNotFound, match="uploads/missing"):
        store.open("uploads/missing")
    with pytest.raises(BlobNotFound):
        store.size("uploads/missing")
    with pytest.raises(BlobNotFound), store.local_path("uploads/missing"):
        pass


@pytest.mark.parametrize("fail_after", [MIB, PART_BYTES + 2 * MIB], ids=["small", "multipart"])
def test_failed_upload_leaves_nothing(store: BlobStore, fail_after: int) -> None:
    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < fail_after:
            yield b"\0" * MIB
            sent += MIB
        raise Boom("client went away")

    with pytest.raises(Boom):
        store.put_stream("uploads/partial", chunks())
    assert not store.exists("uploads/partial")
    if isinstance(store, S3BlobStore):
        pending = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
        assert pending.get("Uploads", []) == []


def test_failed_overwrite_keeps_previous_blob(store: BlobStore) -> None:
    store.put_bytes("uploads/keep", b"old")

    def chunks() -> Iterator[bytes]:
        yield b"\1" * (PART_BYTES + MIB)
        raise Boom("disk full")

    with pytest.raises(Boom):
        store.put_stream("uploads/keep", chunks())
    assert store.get_bytes("uploads/keep") == b"old"


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a"])
def test_invalid_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put_bytes(key, b"x")


def test_large_blob_uses_multipart_parts_of_8_mib(s3_store: S3BlobStore) -> None:
    s3_store.put_stream("uploads/mp", chunked(b"\7" * (2 * PART_BYTES + 1), MIB))
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/uploads/mp")
    # A multipart object's ETag ends in "-<number of parts>".
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == 2 * PART_BYTES + 1


def test_small_blob_is_a_single_put(s3_store: S3BlobStore) -> None:
    s3_store.put_stream("uploads/one", chunked(b"\7" * (PART_BYTES - 1), MIB))
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/uploads/one")
    assert "-" not in head["ETag"].strip('"')


def test_prefixes_isolate_stores(s3_server: S3Server) -> None:
    a = open_blob_store(s3_server.blob_url(), **s3_server.options())
    b = open_blob_store(s3_server.blob_url(), **s3_server.options())
    a.put_bytes("uploads/x", b"a")
    assert not b.exists("uploads/x")
    b.delete_prefix("uploads")
    assert a.get_bytes("uploads/x") == b"a"


def test_bucket_is_created_on_first_use(s3_server: S3Server) -> None:
    store = open_blob_store("s3://fresh-bucket/p", **s3_server.options())
    store.put_bytes("k", b"v")
    assert isinstance(store, S3BlobStore)
    assert store.client.head_object(Bucket="fresh-bucket", Key="p/k")["ContentLength"] == 1


def test_missing_bucket_without_create_is_a_configuration_error(s3_server: S3Server) -> None:
    store = open_blob_store("s3://never-made/p?create_bucket=false", **s3_server.options())
    with pytest.raises(ConfigurationError, match="never-made"):
        store.put_bytes("k", b"v")


def test_settings_option_names_are_accepted(s3_server: S3Server) -> None:
    prefixed = {f"s3_{name}": value for name, value in s3_server.options().items()}
    store = open_blob_store(s3_server.blob_url(), **prefixed)
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="s3_endpoint"):
        S3BlobStore.from_url("s3://b/p", s3_endpoint="http://127.0.0.1:1")


def test_unreachable_server_is_transient() -> None:
    client = make_client(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        max_attempts=1,
    )
    store = S3BlobStore(client, "b", "p")
    with pytest.raises(TransientStoreError, match="unreachable"):
        store.put_bytes("k", b"v")
