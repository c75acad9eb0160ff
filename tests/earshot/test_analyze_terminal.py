"""``earshot analyze`` as a user runs it: folders walked, progress on a terminal, ``| head``.

Real processes: a pseudo-terminal for stderr where a terminal is the point, a real pipe whose
reader goes away for the broken pipe.
"""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from earshot.cli import main
from earshot.terminal import ProgressLine

REPO = Path(__file__).resolve().parents[2]
EARSHOT = [sys.executable, "-m", "earshot"]


def audio_tree(root: Path, samples_dir: Path) -> list[str]:
    """A folder as a user has one; returns the audio files a walk must find, in its order."""
    (root / "b" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    shutil.copy(samples_dir / "sine440.wav", root / "b" / "deeper" / "tone.wav")
    shutil.copy(samples_dir / "sine440.ogg", root / "a.ogg")
    shutil.copy(samples_dir / "sine440.flac", root / ".hidden" / "secret.flac")
    (root / "cover.txt").write_text("not audio")
    return [str(root / "a.ogg"), str(root / "b" / "deeper" / "tone.wav")]


def test_a_folder_is_walked_like_submit_and_a_missing_path_is_a_usage_error(
    samples_dir: Path, tmp_path: Path, capsys
) -> None:
    expected = audio_tree(tmp_path / "music", samples_dir)
    direct = str(samples_dir / "sine440.mp3")
    assert main(["analyze", "--json", "--profile", "fast", direct, str(tmp_path / "music")]) == 0
    captured = capsys.readouterr()
    files = [json.loads(line)["file"] for line in captured.out.splitlines()]
    assert files == [direct, *expected]
    assert "ignored 1 file" in captured.err  # cover.txt; the hidden folder is not walked

    assert main(["analyze", str(tmp_path / "nope.wav"), direct]) == 2
    captured = capsys.readouterr()
    assert "no such file or folder" in captured.err and captured.out == ""


def test_progress_is_drawn_on_a_terminal_and_never_into_a_pipe(
    samples_dir: Path, tmp_path: Path
) -> None:
    expected = audio_tree(tmp_path / "music", samples_dir)
    args = [*EARSHOT, "analyze", "--profile", "fast", "--json", str(tmp_path / "music")]
    primary, replica = pty.openpty()
    termios.tcsetwinsize(replica, (24, 400))  # room for the whole temporary path
    try:
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=replica)
        os.close(replica)
        terminal = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            terminal += chunk
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert [json.loads(line)["file"] for line in out.splitlines()] == expected
    screen = terminal.decode()
    for number, path in enumerate(expected, start=1):
        assert f"[{number}/2] {path}  decode" in screen, screen
    assert "%" in screen and screen.endswith("\r\x1b[2K")  # the line is erased at the end

    piped = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0
    assert "\r" not in piped.stderr and "decode" not in piped.stderr, piped.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(
    samples_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        shutil.copy(samples_dir / "sine440.wav", folder / f"{i}.wav")
    # `earshot analyze --json many | head -n 1` through a shell, as a user types it.
    shell = f"{' '.join(EARSHOT)} analyze --profile fast --json {folder} | head -n 1"
    shell += '; echo "status ${PIPESTATUS[0]}" >&2'
    done = subprocess.run(
        ["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert json.loads(done.stdout)["file"] == str(folder / "0.wav")
    # 128 + SIGPIPE, what a shell reports for any command whose reader went away.
    assert done.stderr.strip().splitlines() == ["status 141"], done.stderr


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_path_gives_way_so_the_stage_and_percentage_fit_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "60")  # the terminal's width when the stream has no size
    screen = FakeTerminal()
    line = ProgressLine(screen)
    line.start("[1/1] /music/" + "very long folder name/" * 5 + "song.flac")
    line("decode+features", 0.5)
    drawn = screen.getvalue().rsplit("\r\x1b[2K", 1)[1]
    assert len(drawn) <= 59 and drawn.startswith("…") and "song.flac  decode+features" in drawn
    assert " 50%" in drawn
    line.clear()
    assert screen.getvalue().endswith("\r\x1b[2K")

    piped = io.StringIO()  # not a terminal: nothing at all
    quiet = ProgressLine(piped)
    quiet.start("x")
    quiet("decode+features", 0.5)
    quiet.clear()
    assert piped.getvalue() == ""
