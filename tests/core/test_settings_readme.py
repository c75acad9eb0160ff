"""The README's settings table lists every setting, so an operator never has to read code."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting() -> None:
    settings_section = README.read_text(encoding="utf-8").split("## Settings", 1)[1]
    missing = [
        f"EARSHOT_{name.upper()}"
        for name in Settings.model_fields
        if f"`EARSHOT_{name.upper()}`" not in settings_section
    ]
    assert missing == []
