"""Magic-byte sniffing: audio containers are recognised by their bytes, nothing else passes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest
from starlette.requests import Request

from api.errors import UploadTooLarge
from api.models import display_filename
from api.uploads import Upload, sniff_audio
from api.uploads import receive as receive_upload
from core.blobs import LocalBlobStore
from tests.api.conftest import wav_bytes


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (wav_bytes()[:16], "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"FORM\x00\x00\x10\x00AIFFCOMM", "aiff"),
        (b"FORM\x00\x00\x10\x00AIFCFVER", "aiff"),
        (b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00", "flac"),
        (b"OggS\x00\x02\x00\x00\x00\x00\x00\x00", "ogg"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE", "mp3"),
        (b"\xff\xfb\x90\x64\x00\x00\x00\x00", "mpeg"),  # MPEG-1 layer III, 128 kbit/s
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "mpeg"),  # ADTS AAC
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00", "mp4"),
        (b"caff\x00\x01\x00\x00desc", "caf"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "matroska"),
    ],
)
def test_audio_containers_are_recognised(head: bytes, expected: str) -> None:
    assert sniff_audio(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"hello, this is text\n",
        b"\xef\xbb\xbfRIFF in a text file",  # UTF-8 BOM
        b"\xff\xfeh\x00e\x00l\x00",  # UTF-16 LE BOM: looks like an MPEG sync word
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",  # JPEG
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # zip
        b"\x7fELF\x02\x01\x01\x00\x00\x00",
        b"MZ\x90\x00\x03\x00\x00\x00",  # Windows executable
        b"%PDF-1.7\n",
        b"RIFF\x24\x00\x00\x00AVI LIST",  # RIFF, but video
        b"",
    ],
)
def test_everything_else_is_refused(head: bytes) -> None:
    assert sniff_audio(head) is None


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("take 1.wav", "take 1.wav"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\song.flac", "song.flac"),
        ("a\x00b\x07c\r\n.wav", "abc.wav"),
        ("evil\u202egnp.wav", "evilgnp.wav"),  # bidi override removed
        ("", "upload"),
        (None, "upload"),
        ("ü" * 300 + ".wav", "ü" * 255),
    ],
)
def test_display_filename_is_sanitised(given: str | None, shown: str) -> None:
    assert display_filename(given) == shown


def test_receive_stops_reading_at_the_limit_and_stores_nothing(tmp_path: Path) -> None:
    """The limit holds while streaming: no Content-Length, and the body is not read to its end."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    ).encode() + wav_bytes()[:44]
    chunks = [head] + [b"\0" * 65536] * 1000  # 64 MB if read to the end
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": True}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/analyses",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
    }

    async def main() -> None:
        await receive_upload(
            Request(scope, receive), blobs=blobs, key="uploads/x", max_bytes=200_000
        )

    with pytest.raises(UploadTooLarge):
        anyio.run(main)
    assert pulled <= 5
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


def test_receive_hashes_and_keeps_fields(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    data = wav_bytes()
    boundary = "xyz"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="profile"\r\n\r\nfast\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    # Split awkwardly so part boundaries straddle network chunks.
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        more = pulled < len(pieces)
        return {"type": "http.request", "body": pieces[pulled - 1], "more_body": more}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/analyses",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
    }

    async def main() -> Upload:
        request = Request(scope, receive)
        return await receive_upload(request, blobs=blobs, key="uploads/x", max_bytes=len(data))

    received = anyio.run(main)
    assert received.fields == {"profile": "fast"}
    assert received.filename == "a.wav"
    assert received.size_bytes == len(data)
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.format == "wav"
    assert blobs.get_bytes("uploads/x") == data
