"""Hostile input end to end: the real API takes the upload, the real task analyses it.

What tests/api/test_analyses.py and tests/analysis/test_decode.py already cover (non-audio
magic bytes, the size cap, forged headers fed to the decoder directly) is not repeated; here
every case goes through the whole path a client's bytes take — multipart upload, sniffing,
blob store, job row, ``run_analysis`` with limits built from Settings — and ends in a clear
answer: 4xx problem, or a failed job with an invalid-audio code and a readable message, and
nothing left on disk.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.names import JobStatus
from tasks.analyze import run_analysis
from tests.api.conftest import runtime_of, stored_uploads, upload, wav_bytes

PROBLEM = "application/problem+json"
INVALID_AUDIO_CODES = {
    "invalid_audio",
    "unreadable_audio",
    "empty_audio",
    "duration_exceeded",
    "sample_rate_out_of_range",
    "too_many_channels",
    "decoded_size_exceeded",
}


def no_retry(exc: Exception) -> None:
    raise AssertionError(f"bad input must never be retried: {exc!r}")


def analyse(client: TestClient, data: bytes, *, filename: str = "clip.wav") -> dict:
    """Upload ``data``, run its task in-process as a worker would, return the job as served."""
    r = upload(client, data, filename=filename)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    run_analysis(runtime_of(client), job_id, retry=no_retry)
    body: dict = client.get(f"/v1/analyses/{job_id}").json()
    return body


def assert_invalid(job: dict, code: str, *words: str) -> None:
    assert job["status"] == JobStatus.FAILED.value, job
    assert job["error"]["code"] == code
    assert code in INVALID_AUDIO_CODES
    message = job["error"]["message"]
    assert message and all(w in message for w in words), message


def forged_wav(*, sr: int, channels: int, data_bytes: int, body: bytes = b"\0" * 64) -> bytes:
    """A WAV header that claims ``data_bytes`` of PCM-16 but carries only ``body``."""
    block_align = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * block_align, block_align, 16)
    riff_size = min(0xFFFFFFFF, 4 + (8 + len(fmt)) + 8 + data_bytes)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
        + body
    )


def forge_flac_streaminfo(
    flac: bytes, *, sample_rate: int | None = None, total_samples: int | None = None
) -> bytes:
    """``flac`` with its STREAMINFO sample rate and/or total sample count rewritten.

    STREAMINFO follows "fLaC" and a 4-byte block header; its bits 80..143 are
    sample rate (20) | channels-1 (3) | bits-1 (5) | total samples (36).
    """
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0
    start = 8 + 10
    bits = int.from_bytes(flac[start : start + 8], "big")
    if sample_rate is not None:
        bits = (bits & ~(0xFFFFF << 44)) | (sample_rate << 44)
    if total_samples is not None:
        bits = (bits & ~((1 << 36) - 1)) | total_samples
    return flac[:start] + bits.to_bytes(8, "big") + flac[start + 8 :]


# -- decompression bombs: refused from the header, cheaply ---------------------------------


def test_wav_claiming_gigabytes_decodes_only_the_bytes_it_has(client: TestClient) -> None:
    # The header claims 4 GB (6.2 h of 48 kHz stereo); 64 bytes follow. The decoder sizes the
    # data chunk by the file, so the claim costs nothing: 16 frames are decoded, no more.
    bomb = forged_wav(sr=48000, channels=2, data_bytes=0xFFFFFF00)
    assert len(bomb) < 200
    job = analyse(client, bomb)
    if job["status"] == "failed":
        assert job["error"]["code"] in INVALID_AUDIO_CODES, job
    else:
        result = client.get(f"/v1/analyses/{job['id']}/result").json()
        assert result["audio"]["duration_s"] < 0.001


def test_wav_with_a_thousand_channels(client: TestClient) -> None:
    bomb = forged_wav(sr=44100, channels=1000, data_bytes=2000 * 10)
    assert_invalid(analyse(client, bomb), "too_many_channels", "1000 channels")
    assert stored_uploads(client) == []


def test_flac_with_a_forged_huge_sample_rate(client: TestClient, samples_dir: Path) -> None:
    flac = forge_flac_streaminfo((samples_dir / "sine440.flac").read_bytes(), sample_rate=655350)
    assert_invalid(analyse(client, flac), "sample_rate_out_of_range", "655350 Hz")
    assert stored_uploads(client) == []


def test_flac_claiming_hundreds_of_hours(client: TestClient, samples_dir: Path) -> None:
    flac = forge_flac_streaminfo(
        (samples_dir / "sine440.flac").read_bytes(), total_samples=(1 << 36) - 1
    )
    assert_invalid(analyse(client, flac), "duration_exceeded", "exceeds the limit")


def test_limits_are_settings(make_client: Callable[..., TestClient]) -> None:
    """EARSHOT_MAX_* reach the decoder: a legal file is refused under tighter settings."""
    client = make_client(max_duration_s=0.1, max_sample_rate=16000, max_channels=1)
    assert_invalid(analyse(client, wav_bytes(seconds=0.5)), "duration_exceeded", "0.1 s")
    wide = forged_wav(sr=44100, channels=1, data_bytes=64)
    assert_invalid(analyse(client, wide), "sample_rate_out_of_range", "44100 Hz")
    stereo = forged_wav(sr=8000, channels=2, data_bytes=64)
    assert_invalid(analyse(client, stereo), "too_many_channels", "2 channels")


def test_decoded_size_limit_is_a_setting(make_client: Callable[..., TestClient]) -> None:
    # 1 s of 8 kHz mono is 32000 bytes as float32: over a 10 kB EARSHOT_MAX_DECODED_BYTES.
    client = make_client(max_decoded_bytes=10_000)
    assert_invalid(analyse(client, wav_bytes(seconds=1.0)), "decoded_size_exceeded", "10000")
    assert stored_uploads(client) == []


# -- content that passes the sniff but is not audio ------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\x24\x00\x00\x00WAVE" + b"this is not a fmt chunk at all" * 20,  # RIFF, then text
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x7fELF" + b"\0" * 500,  # an ELF behind an ID3 tag
        b"fLaC" + b"\xff" * 300,  # a magic number and nothing behind it
        b"OggS" + bytes(range(256)) * 2,
    ],
    ids=["riff-text", "id3-elf", "flac-garbage", "ogg-garbage"],
)
def test_audio_magic_with_garbage_behind_fails_as_unreadable(
    client: TestClient, data: bytes
) -> None:
    job = analyse(client, data)
    assert job["status"] == "failed", job
    assert job["error"]["code"] in INVALID_AUDIO_CODES
    assert job["error"]["message"]
    assert stored_uploads(client) == []


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
def test_truncated_files_end_in_a_clear_answer(
    client: TestClient, samples_dir: Path, ext: str
) -> None:
    data = (samples_dir / f"sine440.{ext}").read_bytes()
    for cut in (20, 200, len(data) // 2):
        r = upload(client, data[:cut], filename=f"cut.{ext}")
        if r.status_code == 415:  # too short to even carry the magic bytes
            continue
        assert r.status_code == 202, r.text
        run_analysis(runtime_of(client), r.json()["id"], retry=no_retry)
        job = client.get(f"/v1/analyses/{r.json()['id']}").json()
        # Half a file may still be half the audio; anything else fails as invalid audio.
        assert job["status"] in ("succeeded", "failed"), job
        if job["status"] == "failed":
            assert job["error"]["code"] in INVALID_AUDIO_CODES, job
    assert all(j["status"] != "running" for j in client.get("/v1/analyses").json()["items"])


# -- decided by content, never by the name or the client's Content-Type ----------------------


def test_audio_named_txt_with_a_text_content_type_is_analysed(client: TestClient) -> None:
    r = client.post(
        "/v1/analyses",
        files={"file": ("notes.txt", wav_bytes(seconds=1.0), "text/plain")},
    )
    assert r.status_code == 202, r.text
    run_analysis(runtime_of(client), r.json()["id"], retry=no_retry)
    assert client.get(f"/v1/analyses/{r.json()['id']}").json()["status"] == "succeeded"


def test_a_shell_script_sent_as_audio_wav_is_415(client: TestClient) -> None:
    r = client.post(
        "/v1/analyses",
        files={"file": ("song.wav", b"#!/bin/sh\nrm -rf /\n" * 10, "audio/wav")},
    )
    assert r.status_code == 415 and r.headers["content-type"] == PROBLEM
    assert stored_uploads(client) == []


# -- hostile file names never decide where bytes go ------------------------------------------


HOSTILE_NAMES = [
    "../../../../etc/passwd.wav",
    "/etc/cron.d/evil.wav",
    "..\\..\\windows\\system32\\drivers\\x.wav",
    "a\x00b.wav",
    "CON.wav",
    "..",
    "é" * 1000 + ".wav",
    "🎵" * 700,
    "uploads/../results/x/result.json",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_file_names_never_reach_a_path(client: TestClient, name: str) -> None:
    data_dir = runtime_of(client).settings.data_dir.resolve()
    before = {p for p in data_dir.rglob("*") if p.is_file()}
    boundary = "hostile-boundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + name.encode("utf-8")
        + b'"\r\nContent-Type: audio/wav\r\n\r\n'
        + wav_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(
        "/v1/analyses",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    # The upload lives under its job id and nowhere else; the name is only shown, and shortly.
    assert stored_uploads(client) == [data_dir / "blobs" / "uploads" / job["id"]]
    new = {p for p in data_dir.rglob("*") if p.is_file()} - before
    assert all(p.is_relative_to(data_dir) for p in new)
    assert not [p for p in new if p.name.endswith((".wav", ".json")) or "passwd" in str(p)]
    shown = job["filename"]
    assert 0 < len(shown) <= 255
    assert "/" not in shown and "\\" not in shown and "\x00" not in shown
    assert not Path("/etc/cron.d/evil.wav").exists()


def test_a_file_name_too_long_for_a_part_header_is_422(client: TestClient) -> None:
    r = upload(client, filename="é" * 20_000 + ".wav")
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert stored_uploads(client) == []
    assert runtime_of(client).jobs.list()[0] == []
