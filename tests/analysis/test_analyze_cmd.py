"""``earshot analyze``: JSON Lines, the table, per-file errors and exit codes."""

from __future__ import annotations

import argparse
import json
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
    assert "sine440.flac" in captured.out and "A minor" in captured.out


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
