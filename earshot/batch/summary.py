"""``summary.csv``: one row per input (failures included), safe to open in a spreadsheet.

The columns are a fixed list, documented one by one in docs/batch.md, so every summary.csv has
the same header whatever the documents hold: a cell whose field a document lacks (a failed
input, a result from an analyzer version without meter or scores) is empty. One naming style:
lower-case words joined by ``_``, the unit last among the words (``_s``, ``_hz``, ``_db``,
``_lufs``, ``_bpm``; none for ratios, counts and unitless scores), then the statistic
(``_mean``, ``_std``); per-coefficient columns carry a two-digit index (``mfcc_01_mean``) and
chroma columns their pitch class (``chroma_C#_mean``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from earshot.batch.manifest import Manifest
from earshot.client.files import atomic_writer

SUMMARY_NAME = "summary.csv"

# What the batch knows of each input, from the manifest: before any result-document column.
OUTCOME_COLUMNS = ("path", "status", "error", "error_message", "job_id", "profile")
# The status of an input this run found but never sent (interrupted, or the API was lost).
NOT_SUBMITTED = "not_submitted"
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCORES = (
    "energy",
    "danceability",
    "valence",
    "acousticness",
    "instrumentalness",
    "speechiness",
    "liveness",
)
# The frame statistics as (column stem, document field under summary, unit).
FRAME_STATISTICS = (
    ("rms", "rms", ""),
    ("zero_crossing_rate", "zero_crossing_rate", ""),
    ("spectral_centroid", "spectral_centroid_hz", "_hz"),
    ("spectral_bandwidth", "spectral_bandwidth_hz", "_hz"),
    ("spectral_rolloff", "spectral_rolloff_hz", "_hz"),
    ("spectral_flatness", "spectral_flatness", ""),
)
SPECTRAL_CONTRAST_BANDS = 7
MFCC_COEFFICIENTS = 20
# A spreadsheet reads a cell starting with one of these as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Document = Mapping[str, Any]


def _get(doc: Document, dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _field(dotted: str) -> Callable[[Document], Any]:
    def read(doc: Document) -> Any:
        value = _get(doc, dotted)
        return value if value is None or isinstance(value, str | int | float) else None

    return read


def _count(dotted: str) -> Callable[[Document], Any]:
    def read(doc: Document) -> Any:
        value = _get(doc, dotted)
        return len(value) if isinstance(value, list) else None

    return read


def _item(dotted: str, index: int) -> Callable[[Document], Any]:
    def read(doc: Document) -> Any:
        value = _get(doc, dotted)
        if isinstance(value, list) and index < len(value):
            item = value[index]
            return item if isinstance(item, int | float) else None
        return None

    return read


def _chroma(pitch_class: str) -> Callable[[Document], Any]:
    # By the document's own pitch_classes, so a column never holds another class's value.
    def read(doc: Document) -> Any:
        names = _get(doc, "summary.chroma.pitch_classes")
        if not isinstance(names, list) or pitch_class not in names:
            return None
        return _item("summary.chroma.mean", names.index(pitch_class))(doc)

    return read


def _document_columns() -> dict[str, Callable[[Document], Any]]:
    columns: dict[str, Callable[[Document], Any]] = {
        "analyzer_version": _field("analyzer_version"),
        "duration_s": _field("audio.duration_s"),
        "sample_rate_hz": _field("audio.sample_rate"),
        "channels": _field("audio.channels"),
        "format": _field("audio.format"),
        "codec": _field("audio.codec"),
        "sha256": _field("audio.sha256"),
        "tempo_bpm": _field("summary.tempo.bpm"),
        "tempo_confidence": _field("summary.tempo.confidence"),
        "beat_count": _count("summary.beats_s"),
        "beats_per_bar": _field("summary.meter.beats_per_bar"),
        "meter_confidence": _field("summary.meter.confidence"),
        "onset_rate_per_s": _field("summary.onset_rate_per_s"),
        "key": _field("summary.key.tonic"),
        "mode": _field("summary.key.mode"),
        "key_confidence": _field("summary.key.confidence"),
        "tuning_semitones": _field("summary.chroma.tuning_semitones"),
        "section_count": _count("summary.sections"),
        "end_of_fade_in_s": _field("summary.fade.end_of_fade_in_s"),
        "start_of_fade_out_s": _field("summary.fade.start_of_fade_out_s"),
        "loudness_lufs": _field("summary.loudness.integrated_lufs"),
        "loudness_range_lu": _field("summary.loudness.loudness_range_lu"),
        "peak_dbfs": _field("summary.loudness.peak_dbfs"),
        "clipping_ratio": _field("summary.loudness.clipping_ratio"),
        "rms_db_mean": _field("summary.loudness.rms_mean_db"),
        "silence_ratio": _field("summary.silence_ratio"),
    }
    for score in SCORES:
        columns[score] = _field(f"summary.scores.{score}")
    for stem, name, unit in FRAME_STATISTICS:
        for stat in ("mean", "std"):
            columns[f"{stem}{unit}_{stat}"] = _field(f"summary.{name}.{stat}")
    for stat in ("mean", "std"):
        for band in range(SPECTRAL_CONTRAST_BANDS):
            columns[f"spectral_contrast_{band + 1:02d}_db_{stat}"] = _item(
                f"summary.spectral_contrast_db.{stat}", band
            )
    for stat in ("mean", "std"):
        for coefficient in range(MFCC_COEFFICIENTS):
            columns[f"mfcc_{coefficient + 1:02d}_{stat}"] = _item(
                f"summary.mfcc.{stat}", coefficient
            )
    for pitch_class in PITCH_CLASSES:
        columns[f"chroma_{pitch_class}_mean"] = _chroma(pitch_class)
    return columns


DOCUMENT_COLUMNS = _document_columns()
COLUMNS: tuple[str, ...] = (*OUTCOME_COLUMNS, *DOCUMENT_COLUMNS)


def summary_row(rel: str, record: Mapping[str, Any], doc: Document | None) -> dict[str, Any]:
    """The row of one input: its manifest ``record`` and, when it succeeded, its document."""
    error = record.get("error")
    if not isinstance(error, Mapping):
        error = {}
    row: dict[str, Any] = {
        "path": rel,
        "status": record.get("status") or NOT_SUBMITTED,
        "error": error.get("code"),
        "error_message": error.get("message"),
        "job_id": record.get("job_id"),
        "profile": record.get("profile"),
    }
    if doc is not None:
        row.update({name: read(doc) for name, read in DOCUMENT_COLUMNS.items()})
        row["profile"] = _field("profile")(doc) or row["profile"]
    return row


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """One line per row, sorted by path; every text cell (header included) through csv_cell."""
    with atomic_writer(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([csv_cell(c) for c in COLUMNS])
        for row in sorted(rows, key=lambda r: r["path"]):
            writer.writerow([csv_cell(row.get(c)) for c in COLUMNS])


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


def build_summary(out: Path, manifest: Manifest, inputs: Iterable[str] = ()) -> int:
    """Write summary.csv: a row per manifest record and per input never sent; the row count.

    ``inputs`` are the names (``rel``) this run found: one that has no record yet (the run
    was interrupted before it) gets a row with status ``not_submitted``. A succeeded record
    whose document cannot be read keeps its status and says so in ``error``.
    """
    records: dict[str, Mapping[str, Any]] = {rel: {} for rel in inputs}
    records.update(manifest.records)
    rows = []
    for rel, record in sorted(records.items()):
        doc: Document | None = None
        if record.get("status") == "succeeded":
            try:
                loaded = json.loads((out / f"{rel}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                loaded = None
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = "not a JSON object"
            if isinstance(loaded, dict):
                doc = loaded
            else:
                record = {**record, "error": {"code": "result_unreadable", "message": reason}}
        rows.append(summary_row(rel, record, doc))
    write_summary(out / SUMMARY_NAME, rows)
    return len(rows)
