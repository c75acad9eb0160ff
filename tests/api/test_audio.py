"""``GET /v1/analyses/{id}/audio``: the uploaded file with HTTP Range (RFC 9110 section 14).

The truth is the sample file read from disk: every answered byte range must equal the file's
bytes at those offsets, on the local blob store and on S3 (a moto server over HTTP).
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.names import upload_key
from tests.api.conftest import finish, runtime_of, upload
from tests.s3server import S3Server, s3_server

__all__ = ["s3_server"]  # the fixture is used by name

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
FLAC = SAMPLES / "click120_cmajor.flac"


@pytest.fixture
def flac(client: TestClient) -> tuple[TestClient, str, bytes]:
    data = FLAC.read_bytes()
    job = upload(client, data, filename="click.flac").json()
    return client, job["id"], data


def audio(client: TestClient, job_id: str, **headers: str | bytes) -> httpx.Response:
    return client.get(f"/v1/analyses/{job_id}/audio", headers=headers)


def byteranges(r: httpx.Response) -> list[tuple[str, str, bytes]]:
    """(Content-Range, Content-Type, bytes) of each part of a multipart/byteranges answer."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content
    )
    return [(p["Content-Range"], p["Content-Type"], p.get_content()) for p in message.iter_parts()]


def test_whole_file_with_its_type_length_and_validators(
    flac: tuple[TestClient, str, bytes],
) -> None:
    client, job_id, data = flac
    r = audio(client, job_id)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "audio/flac"
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"].startswith('inline; filename="click.flac"')
    again = audio(client, job_id, **{"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-1099", 100, 1099),
        ("bytes=1000-", 1000, None),
        ("bytes=-500", -500, None),
        ("bytes=7-999999999", 7, None),  # past the end: cut at it
        ("BYTES = 20 - 29 ", 20, 29),  # unit is case-insensitive, whitespace allowed
        ("bytes=0-99, 50-149", 0, 149),  # overlapping: merged into one
        ("bytes=,10-19,", 10, 19),  # empty list elements are allowed
    ],
)
def test_one_range_is_206_with_the_bytes_at_those_offsets(
    flac: tuple[TestClient, str, bytes], spec: str, first: int, last: int | None
) -> None:
    client, job_id, data = flac
    expected = data[first:] if last is None else data[first : last + 1]
    start = first % len(data)
    r = audio(client, job_id, Range=spec)
    assert r.status_code == 206, r.text
    assert r.content == expected
    assert r.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    assert r.headers["content-length"] == str(len(expected))
    assert r.headers["content-type"] == "audio/flac"


def test_several_ranges_are_a_multipart_byteranges(flac: tuple[TestClient, str, bytes]) -> None:
    client, job_id, data = flac
    r = audio(client, job_id, Range="bytes=-4, 0-9, 4000-4999")
    assert r.status_code == 206
    assert r.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert r.headers["content-length"] == str(len(r.content))
    parts = byteranges(r)
    size = len(data)
    # Sorted by offset (RFC 9110 lets a server reorder when it merges).
    assert parts == [
        (f"bytes 0-9/{size}", "audio/flac", data[0:10]),
        (f"bytes 4000-4999/{size}", "audio/flac", data[4000:5000]),
        (f"bytes {size - 4}-{size - 1}/{size}", "audio/flac", data[-4:]),
    ]


@pytest.mark.parametrize("spec", ["bytes={size}-", "bytes={size}-{big}", "bytes=-0"])
def test_unsatisfiable_range_is_416_with_the_size(
    flac: tuple[TestClient, str, bytes], spec: str
) -> None:
    client, job_id, data = flac
    r = audio(client, job_id, Range=spec.format(size=len(data), big=len(data) + 10))
    assert r.status_code == 416
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["content-range"] == f"bytes */{len(data)}"
    assert r.json()["code"] == "range_not_satisfiable"


def test_too_many_ranges_are_refused(flac: tuple[TestClient, str, bytes]) -> None:
    client, job_id, _ = flac
    spec = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))
    r = audio(client, job_id, Range=spec)
    assert r.status_code == 416
    assert r.json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=5-2",
        "bytes=abc",
        "items=0-5",
        "bytes=",
        "bytes=1-2-3",
        "0-5",
        "bytes=--5",
        "bytes=\xb2-",
    ],
)
def test_an_invalid_range_header_is_ignored(flac: tuple[TestClient, str, bytes], spec: str) -> None:
    client, job_id, data = flac
    r = audio(client, job_id, Range=spec.encode("latin-1"))  # as sent on the wire
    assert r.status_code == 200
    assert r.content == data


def test_if_range_keeps_the_range_only_for_the_current_etag(
    flac: tuple[TestClient, str, bytes],
) -> None:
    client, job_id, data = flac
    etag = audio(client, job_id).headers["etag"]
    kept = audio(client, job_id, Range="bytes=10-19", **{"If-Range": etag})
    assert (kept.status_code, kept.content) == (206, data[10:20])
    for other in ('"0123"', "Wed, 21 Oct 2015 07:28:00 GMT", "W/" + etag):
        whole = audio(client, job_id, Range="bytes=10-19", **{"If-Range": other})
        assert (whole.status_code, whole.content) == (200, data)


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("click120_cmajor.wav", "audio/wav"),
        ("click120_cmajor.ogg", "audio/ogg"),
        ("click120_cmajor.opus", "audio/ogg"),
        ("click120_cmajor.mp3", "audio/mpeg"),
        ("click120_cmajor.m4a", "audio/mp4"),
    ],
)
def test_content_type_follows_the_bytes(client: TestClient, name: str, media_type: str) -> None:
    data = (SAMPLES / name).read_bytes()
    # The name says nothing: the type comes from the bytes.
    job = upload(client, data, filename="noname.bin").json()
    r = audio(client, job["id"], Range="bytes=0-99")
    assert (r.status_code, r.headers["content-type"], r.content) == (206, media_type, data[:100])


def test_keys_see_only_their_own_audio(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="key-alpha-0123456789,key-beta-0123456789")
    alpha = {"Authorization": "Bearer key-alpha-0123456789"}
    beta = {"Authorization": "Bearer key-beta-0123456789"}
    job = upload(client, FLAC.read_bytes(), headers=alpha).json()
    assert audio(client, job["id"], **alpha).status_code == 200
    assert audio(client, job["id"], **beta).json()["code"] == "not_found"
    assert audio(client, job["id"]).json()["code"] == "unauthorized"
    assert audio(client, "f" * 32, **alpha).status_code == 404


def test_a_cached_job_plays_the_upload_it_reused(client: TestClient) -> None:
    data = FLAC.read_bytes()
    first = upload(client, data).json()
    finish(client, first["id"], document={"bpm": 120.0})
    second = upload(client, data).json()
    assert second["cached"] is True
    assert not runtime_of(client).blobs.exists(upload_key(second["id"]))
    assert second["links"]["audio"] == f"/v1/analyses/{second['id']}/audio"
    r = audio(client, second["id"], Range="bytes=-100")
    assert (r.status_code, r.content) == (206, data[-100:])


def test_a_canceled_job_has_no_audio(client: TestClient) -> None:
    job = upload(client, FLAC.read_bytes()).json()
    canceled = client.delete(f"/v1/analyses/{job['id']}").json()
    assert canceled["links"]["audio"] is None
    r = audio(client, job["id"])
    assert r.status_code == 404
    assert r.json()["code"] == "audio_unavailable"


def test_ranges_from_s3(make_client: Callable[..., TestClient], s3_server: S3Server) -> None:
    client = make_client(
        blob_url=s3_server.blob_url(), **{f"s3_{k}": v for k, v in s3_server.options().items()}
    )
    data = FLAC.read_bytes()
    job = upload(client, data).json()
    whole = audio(client, job["id"])
    assert (whole.status_code, whole.content) == (200, data)
    one = audio(client, job["id"], Range="bytes=1234-5678")
    assert (one.status_code, one.content) == (206, data[1234:5679])
    several = audio(client, job["id"], Range="bytes=0-1,-2")
    assert several.status_code == 206
    size = len(data)
    assert byteranges(several) == [
        (f"bytes 0-1/{size}", "audio/flac", data[:2]),
        (f"bytes {size - 2}-{size - 1}/{size}", "audio/flac", data[-2:]),
    ]


def test_head_answers_the_headers_of_the_ranged_get(flac: tuple[TestClient, str, bytes]) -> None:
    client, job_id, data = flac
    for headers, length in (({}, len(data)), ({"Range": "bytes=100-199"}, 100)):
        get = client.get(f"/v1/analyses/{job_id}/audio", headers=headers)
        head = client.head(f"/v1/analyses/{job_id}/audio", headers=headers)
        assert head.status_code == get.status_code
        assert head.content == b""
        assert head.headers["content-length"] == str(length)
        for name in ("content-type", "content-length", "content-range", "etag", "accept-ranges"):
            assert head.headers.get(name) == get.headers.get(name), name
