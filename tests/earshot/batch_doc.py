"""The columns of summary.csv as docs/batch.md lists them: the truth the file is checked against.

Read from the first cell of each row of the table under ``## summary.csv``: back-quoted names
separated by commas, or a range ``a_01_b`` … ``a_20_b`` spelled by its first and last member.
"""

from __future__ import annotations

import re
from pathlib import Path

BATCH_DOC = Path(__file__).resolve().parents[2] / "docs" / "batch.md"
_RANGE = re.compile(r"^`(?P<first>[^`]+)` … `(?P<last>[^`]+)`$")


def _expand(first: str, last: str) -> list[str]:
    head, start, tail = re.fullmatch(r"(.*?_)(\d+)(_.*|)", first).groups()  # type: ignore[union-attr]
    stop = re.fullmatch(rf"{re.escape(head)}(\d+){re.escape(tail)}", last)
    assert stop is not None, (first, last)
    width = len(start)
    return [f"{head}{i:0{width}d}{tail}" for i in range(int(start), int(stop.group(1)) + 1)]


def documented_columns(doc: Path = BATCH_DOC) -> list[str]:
    """Every column docs/batch.md lists for summary.csv, in the documented order."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("\n## summary.csv\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    columns: list[str] = []
    for line in table:
        cell = line.split(" | ", 1)[0].removeprefix("| ").strip()
        if match := _RANGE.match(cell):
            columns.extend(_expand(match["first"], match["last"]))
        else:
            columns.extend(re.findall(r"`([^`]+)`", cell))
    assert columns, f"no column table under '## summary.csv' in {doc}"
    return columns
