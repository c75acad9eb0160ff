"""``summary.csv``: one row per succeeded input, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from earshot.batch.manifest import Manifest
from earshot.client.files import atomic_writer

SUMMARY_NAME = "summary.csv"

# summary.csv starts with these columns, taken from the result document by dotted name.
SUMMARY_COLUMNS: dict[str, str] = {
    "duration_s": "audio.duration_s",
    "tempo_bpm": "summary.tempo.bpm",
    "key": "summary.key.tonic",
    "mode": "summary.key.mode",
    "loudness_lufs": "summary.loudness.integrated_lufs",
}
# Numeric lists up to this length (MFCC or chroma means) become numbered columns; longer ones
# are series that belong in the per-file CSV, not in a one-row-per-file table.
MAX_LIST_COLUMNS = 32
# A spreadsheet reads a cell starting with one of these as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar fields of a result document by dotted name; short numeric lists get numbered.

    Lists named ``*_s`` are event times (beats, onsets) and are left out whatever their length,
    so the set of columns does not depend on how long a file is.
    """
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            if (
                not key.endswith("_s")
                and 0 < len(value) <= MAX_LIST_COLUMNS
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            ):
                for i, v in enumerate(value):
                    flat[f"{name}.{i}"] = v
        elif value is None or isinstance(value, str | int | float | bool):
            flat[name] = value
    return flat


def summary_row(rel: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    flat = flatten({k: doc[k] for k in ("audio", "summary") if isinstance(doc.get(k), Mapping)})
    row: dict[str, Any] = {"path": rel}
    for column, dotted in SUMMARY_COLUMNS.items():
        row[column] = flat.pop(dotted, None)
    row.update(sorted(flat.items()))
    return row


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """One line per row, sorted by path; every text cell (header included) through csv_cell."""
    columns: list[str] = ["path", *SUMMARY_COLUMNS]
    extra = sorted({c for row in rows for c in row} - set(columns), key=_natural)
    columns.extend(extra)
    with atomic_writer(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([csv_cell(c) for c in columns])
        for row in sorted(rows, key=lambda r: r["path"]):
            writer.writerow([csv_cell(row.get(c)) for c in columns])


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    # chroma.mean.2 before chroma.mean.10
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in name.split("."))


def csv_cell(value: Any) -> str:
    """A summary.csv cell: numbers as written, text neutralised against formula injection.

    File names and server strings are untrusted: a name like ``=HYPERLINK(...)`` or
    ``@SUM(A1)`` would run as a formula when the CSV is opened in a spreadsheet. OWASP's rule:
    a text cell that starts with ``= + - @``, tab or CR gets a leading ``'``, which spreadsheets
    read as "this is text". Numbers are ours (ints and floats from the JSON document), so a
    negative number such as -14.2 stays a number.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def build_summary(out: Path, manifest: Manifest) -> int:
    """Write summary.csv from every succeeded record's result document; returns the row count."""
    rows = []
    for rel, record in sorted(manifest.records.items()):
        if record.get("status") != "succeeded":
            continue
        doc_path = out / f"{rel}.json"
        try:
            doc = json.loads(doc_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            rows.append(summary_row(rel, doc))
    write_summary(out / SUMMARY_NAME, rows)
    return len(rows)
