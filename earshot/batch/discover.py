"""Which files a batch sends: folders walked, names matched, outputs named relative to a root."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from earshot.client.errors import UsageError

DEFAULT_PATTERNS = (
    "*.wav",
    "*.wave",
    "*.flac",
    "*.aif",
    "*.aiff",
    "*.aifc",
    "*.ogg",
    "*.oga",
    "*.opus",
    "*.mp3",
    "*.m4a",
    "*.aac",
    "*.mp4",
    "*.webm",
    "*.caf",
    "*.w64",
)


@dataclass(frozen=True)
class Input:
    """One file to analyse: where it is and where its outputs go (``rel`` under ``--out``)."""

    path: Path
    rel: str


@dataclass
class Discovery:
    inputs: list[Input] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rsplit("/", 1)[-1].lower()
    for pattern in patterns:
        target = rel.lower() if "/" in pattern else name
        if fnmatch.fnmatchcase(target, pattern.lower()):
            return True
    return False


def discover(
    paths: Iterable[str | Path],
    *,
    patterns: Iterable[str] = DEFAULT_PATTERNS,
    exclude: Path | None = None,
) -> Discovery:
    """Expand files and folders into inputs, each named relative to the root it was found under.

    A folder is walked recursively; its files are kept when their name matches one of
    ``patterns`` (case-insensitive), hidden files and folders are ignored, and the rest are
    listed in ``skipped``. A file named on the command line is always kept: the server decides
    by content, the extension only steers discovery. ``exclude`` (the output folder) is never
    walked, so results written inside an input folder are not sent back as inputs.
    """
    patterns = tuple(patterns)
    found = Discovery()
    owner: dict[str, Path] = {}
    excluded = exclude.resolve() if exclude is not None else None

    def add(path: Path, rel: str) -> None:
        resolved = path.resolve()
        if rel in owner:
            if owner[rel] == resolved:
                return
            raise UsageError(
                f"{owner[rel]} and {path} would both write {rel!r} under --out; "
                "submit them in separate runs or with separate --out folders"
            )
        owner[rel] = resolved
        found.inputs.append(Input(path=path, rel=rel))

    for raw in paths:
        root = Path(raw)
        if root.is_file():
            add(root, root.name)
        elif root.is_dir():
            matched: list[tuple[str, Path]] = []
            for dirpath, dirnames, filenames in os.walk(root):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".") and (here / d).resolve() != excluded
                )
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = here / name
                    rel = path.relative_to(root).as_posix()
                    if _matches(rel, patterns):
                        matched.append((rel, path))
                    else:
                        found.skipped.append(path)
            for rel, path in sorted(matched):
                add(path, rel)
        else:
            raise UsageError(f"no such file or folder: {raw}")
    return found


# What a result format's file is called after the input's name (default: ``<rel>.<format>``);
# every JSON file ends in .json.
SUFFIXES = {
    "segments": "segments.json",
    "audio-features": "audio-features.json",
    "audio-analysis": "audio-analysis.json",
}


def output_paths(out: Path, rel: str, formats: Iterable[str]) -> dict[str, Path]:
    """Where each format's file of input ``rel`` goes: ``song.flac.json``,
    ``song.flac.audio-features.json``, ..."""
    return {fmt: out / f"{rel}.{SUFFIXES.get(fmt, fmt)}" for fmt in formats}
