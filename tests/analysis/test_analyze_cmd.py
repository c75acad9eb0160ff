"""``earshot analyze``: JSON Lines, the table, per-file errors and exit codes."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from analysis import PROFILES
from earshot import analyze_cmd


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="earshot analyze")
    analyze_cmd.add_arguments("analyze", parser)
    return analyze_cmd.run("analyze", parser.parse_args(argv))


def test_every_analysis_profile_is_a_choice_and_others_are_usage_errors(capsys):
    parser = argparse.ArgumentParser(prog="earshot analyze")
    analyze_cmd.add_arguments("analyze", parser)
    for name in PROFILES:
        assert parser.parse_args(["--profile", name, "x.wav"]).profile == name
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--profile", "turbo", "x.wav"])
    assert exited.value.code == 2
    assert "turbo" in capsys.readouterr().err


def test_json_lines_one_document_per_file(samples_dir: Path, capsys: pytest.CaptureFixture):
    files = [str(samples_dir / "sine440.wav"), str(samples_dir / "click120_cmajor.mp3")]
    assert _run(["--json", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    documents = [json.loads(line) for line in lines]
    assert [d["file"] for d in documents] == files
    assert documents[1]["summary"]["key"]["tonic"] == "C"


def test_a_failing_file_is_reported_and_the_others_still_run(
    samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert _run([str(bad), str(samples_dir / "sine440.flac")]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: unreadable_audio:" in captured.err
    # The good file's report is complete: a lone 440 Hz sine has its centroid at 440-442 Hz (its
    # key is ambiguous: A is in several keys' triads, so the key is not asserted here).
    assert "sine440.flac" in captured.out
    assert re.search(r"centroid\s+44[0-2] Hz", captured.out)


def test_usage_error_exits_2(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        _run(["--profile", "nope", "x.wav"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        _run([])
    assert exc.value.code == 2


def test_through_the_earshot_command(samples_dir: Path, capsys: pytest.CaptureFixture):
    from earshot.cli import main

    assert main(["analyze", "--json", "--profile", "fast", str(samples_dir / "sine440.mp3")]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["profile"] == "fast"
    assert document["audio"]["codec"] == "mpeg_layer_iii"


@pytest.mark.parametrize("view", ["audio-features", "audio-analysis"])
def test_view_one_line_per_file_in_the_order_given(
    samples_dir: Path, tmp_path: Path, view: str, capsys: pytest.CaptureFixture
):
    from jsonschema import Draft202012Validator
    from pydantic import TypeAdapter

    from analysis.views import AudioAnalysis, AudioFeatures

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    files = [
        str(samples_dir / "click120_cmajor.ogg"),
        str(bad),
        str(samples_dir / "aminor_progression.flac"),
    ]
    assert _run(["--view", view, *files]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: unreadable_audio:" in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line.pop("file") for line in lines] == [files[0], files[2]]
    schema = TypeAdapter(AudioFeatures if view == "audio-features" else AudioAnalysis)
    check = Draft202012Validator(schema.json_schema())
    for line in lines:
        assert [e.message for e in check.iter_errors(line)] == []
    # samples/README.md: C major, then A minor (pitch classes 0 and 9; mode 1 major, 0 minor).
    keyed = lines if view == "audio-features" else [line["track"] for line in lines]
    assert [(k["key"], k["mode"]) for k in keyed] == [(0, 1), (9, 0)]


def test_a_first_run_loads_the_installed_jit_cache_and_compiles_nothing(samples_dir: Path):
    """`earshot analyze` in a fresh process, nothing choosing a numba cache: numba's own log
    (NUMBA_DEBUG_CACHE) must show every kernel loaded from the cache `make install` warmed,
    and none compiled and saved (before, it compiled into folders beside the sources)."""
    import os
    import subprocess
    import sys

    from earshot.service_cmd import INSTALL_NUMBA_CACHE, warm_stamp

    if not warm_stamp(INSTALL_NUMBA_CACHE).exists():
        message = "make install has not warmed this code's build (analysis/ changed since)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_DEBUG_CACHE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "earshot", "analyze", "--json", str(samples_dir / "sine440.flac")],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    loaded = [line for line in log.splitlines() if "[cache] data loaded from" in line]
    assert loaded, log[-3000:]
    assert all(str(INSTALL_NUMBA_CACHE) in line for line in loaded), loaded
    assert "[cache] data saved to" not in log, log[-3000:]
