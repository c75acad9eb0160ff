"""``earshot submit``/``status``/``fetch`` against a real service started with ``earshot dev``.

A batch with good and broken files, its repeat (nothing re-sent), and a run interrupted with
SIGINT halfway then resumed (no duplicate job).
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.submit_fixtures import (
    REPO,
    Service,
    broken_files,
    free_port,
    numba_cache,
    run_cli,
    sample_tree,
    service,
)

__all__ = ["numba_cache", "service"]  # fixtures, imported so pytest finds them here

KNOWN = {
    # clip -> (tempo BPM or None, tonic, mode or None), from samples/README.md
    "click120_cmajor": (120.0, "C", "major"),
    "aminor_progression": (None, "A", "minor"),
}


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole: no torn record
    return {r["path"]: r for r in records}


def summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_batch_with_broken_files_then_a_repeat_that_sends_nothing(
    service: Service, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    good = sample_tree(inputs)
    broken = broken_files(inputs)
    (inputs / "lossy" / "cover.txt").write_text("not picked: not an audio extension")
    out = tmp_path / "out"
    args = ["submit", str(inputs), "--out", str(out), "--api-url", service.url]
    args += ["--format", "json,csv,npz", "--poll-interval", "0.2", "--json"]

    first = run_cli(*args, check_rc=1)

    records = manifest(out)
    assert set(records) == set(good) | set(broken)
    for rel in good:
        record = records[rel]
        assert record["status"] == "succeeded", record
        assert record["job_id"]
        assert sorted(record["outputs"]) == sorted(f"{rel}.{f}" for f in ("json", "csv", "npz"))
        assert all((out / o).stat().st_size > 0 for o in record["outputs"])
        assert json.loads((out / f"{rel}.json").read_text())["audio"]["duration_s"] > 0
    for rel in broken:
        record = records[rel]
        assert record["status"] == "failed", record
        assert record["error"]["code"] and record["error"]["message"], record
    ignored = [e for e in events(first.stdout) if e["event"] == "ignored"]
    assert [Path(e["path"]).name for e in ignored] == ["cover.txt"]

    rows = summary(out)
    assert set(rows) == set(good)
    for rel, row in rows.items():
        clip = Path(rel).stem
        if clip in KNOWN:
            bpm, tonic, mode = KNOWN[clip]
            assert (row["key"], row["mode"]) == (tonic, mode), (rel, row["key"], row["mode"])
            if bpm is not None:
                assert abs(float(row["tempo_bpm"]) - bpm) <= 2.0, (rel, row["tempo_bpm"])
        assert float(row["duration_s"]) > 0 and row["loudness_lufs"] != ""

    jobs_after_first = len(service.jobs())
    # Good files plus the truncated FLAC (accepted, fails in the worker); the text file and
    # the empty file are refused at upload and never become jobs.
    assert jobs_after_first == len(good) + 1

    second = run_cli(*args, check_rc=1)
    kinds = [e["event"] for e in events(second.stdout)]
    assert "uploaded" not in kinds
    assert kinds.count("skipped") == len(good)
    assert kinds.count("failed") == len(broken)
    assert len(service.jobs()) == jobs_after_first
    assert set(summary(out)) == set(good)

    job_id = records["lossless/wav/click120_cmajor.wav"]["job_id"]
    status = run_cli("status", job_id, "--json", "--api-url", service.url, check_rc=0)
    assert json.loads(status.stdout)["status"] == "succeeded"
    fetched = tmp_path / "fetched"
    run_cli(
        "fetch",
        job_id,
        "--out",
        str(fetched),
        "--format",
        "csv",
        "--api-url",
        service.url,
        check_rc=0,
    )
    assert json.loads((fetched / f"{job_id}.json").read_text()) == json.loads(
        (out / "lossless/wav/click120_cmajor.wav.json").read_text()
    )
    assert (fetched / f"{job_id}.csv").read_bytes() == (
        out / "lossless/wav/click120_cmajor.wav.csv"
    ).read_bytes()


def test_interrupted_run_resumes_without_duplicate_jobs(service: Service, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    good = sample_tree(inputs)
    out = tmp_path / "out"
    # The "fast" profile keeps these jobs apart from the other test's (same files, same
    # service): each is new work, counted by profile below.
    args = ["submit", str(inputs), "--out", str(out), "--api-url", service.url]
    args += ["--profile", "fast", "--concurrency", "1", "--poll-interval", "0.2"]

    proc = subprocess.Popen(
        [sys.executable, "-m", "earshot", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest_path = out / "manifest.jsonl"
    while proc.poll() is None:
        if manifest_path.exists() and '"succeeded"' in manifest_path.read_text():
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)

    records = manifest(out)
    done = {rel for rel, r in records.items() if r["status"] == "succeeded"}
    assert 1 <= len(done) < len(good)
    assert all(r["status"] in ("queued", "running", "succeeded") for r in records.values())

    run_cli(*args, check_rc=0)

    records = manifest(out)
    assert set(records) == set(good)
    assert all(r["status"] == "succeeded" for r in records.values())
    fast_jobs = [j for j in service.jobs() if j["profile"] == "fast"]
    assert len(fast_jobs) == len(good)
    assert {j["id"] for j in fast_jobs} == {r["job_id"] for r in records.values()}
    assert set(summary(out)) == set(good)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = run_cli("submit", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "empty").mkdir()
    nothing = run_cli("submit", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert nothing.returncode == 2 and "no audio files" in nothing.stderr
    no_out = run_cli("submit", str(tmp_path / "empty"))
    assert no_out.returncode == 2 and "--out" in no_out.stderr


pytestmark = pytest.mark.filterwarnings("error")


def test_no_service_stops_the_batch_after_bounded_retries(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    sample_tree(inputs)
    out = tmp_path / "out"
    nobody = f"http://127.0.0.1:{free_port()}"
    done = run_cli(
        "submit", str(inputs), "--out", str(out), "--api-url", nobody, "--max-retries", "1"
    )
    assert done.returncode == 1
    assert "cannot connect" in done.stderr
    assert manifest(out) == {}  # nothing was sent, so nothing is recorded as failed
