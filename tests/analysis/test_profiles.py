"""The profiles: defined once, as docs/result.md documents them, and refused by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis import PROFILES, analyze_file
from analysis.errors import UnknownProfile
from analysis.profiles import DEFAULT_PROFILE, PROFILE_PARAMS, Profile, get_profile

RESULT_MD = Path(__file__).resolve().parents[2] / "docs" / "result.md"


def documented_profiles() -> dict[str, Profile]:
    """The table under "## Profiles" in docs/result.md, parsed."""
    section = RESULT_MD.read_text(encoding="utf-8").split("## Profiles", 1)[1].split("\n## ")[0]
    row = re.compile(r"^\| `(\w+)` \| (\d+) Hz \| (\d+) \| (\d+) \([\d.]+ ms\) \| (\d+) \|$")
    found = {}
    for line in section.splitlines():
        if m := row.match(line):
            name, sr, n_fft, hop, n_mels = m.groups()
            found[name] = Profile(int(sr), int(n_fft), int(hop), int(n_mels))
    return found


def test_profiles_are_the_documented_table():
    documented = documented_profiles()
    assert len(documented) >= 2, "the table in docs/result.md was not parsed"
    assert dict(PROFILE_PARAMS) == documented
    assert tuple(documented) == PROFILES
    assert DEFAULT_PROFILE == "standard" == PROFILES[0]


def test_profiles_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        PROFILE_PARAMS["slow"] = Profile(44100, 4096, 256, 256)  # type: ignore[index]


@pytest.mark.parametrize("name", ["", "Standard", "fast ", "slow", "../standard"])
def test_an_unknown_profile_is_refused_with_the_choices(name: str):
    with pytest.raises(UnknownProfile, match="choose one of standard, fast"):
        get_profile(name)


def test_analyze_file_refuses_an_unknown_profile_before_reading_the_file(tmp_path: Path):
    # The file does not exist: the profile is checked first, so no decode error hides it.
    with pytest.raises(UnknownProfile):
        analyze_file(tmp_path / "missing.wav", profile="slow")
