"""Frame-level series as downloadable files: CSV for spreadsheets, NPZ for numpy; the segments
as JSON."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from analysis.analyze import Analysis

_CSV_BLOCK_ROWS = 4096


def frame_times(analysis: Analysis) -> np.ndarray:
    """Centre time in seconds of every frame.

    Returns
    -------
    np.ndarray [shape=(n_frames,)], float64
    """
    n = len(next(iter(analysis.frames.values()))) if analysis.frames else 0
    return np.arange(n) * analysis.hop_s


def frames_to_csv(analysis: Analysis) -> bytes:
    """UTF-8 CSV: a ``time_s`` column then one column per series, one row per frame.

    The rows are ``analysis.csv_rows`` when the chunks of a chunked analysis formatted theirs
    (the same ``csv_rows`` on the same values, so the same bytes), else formatted here.
    """
    names = list(analysis.frames)
    header = ",".join(["time_s", *names]) + "\n"
    if analysis.csv_rows:
        return b"".join([header.encode("utf-8"), *analysis.csv_rows])
    return header.encode("utf-8") + csv_rows(
        frame_times(analysis), [analysis.frames[n] for n in names]
    )


def csv_rows(times: np.ndarray, columns: list[np.ndarray]) -> bytes:
    """The rows of frames.csv for some frames: each frame's time, then its value of each column.

    Parameters
    ----------
    times : np.ndarray [shape=(n,)], float64
        Centre time of each frame, seconds (``frame_times``, or a slice of it).
    columns : list of np.ndarray [shape=(n,)]
        One series per CSV column after ``time_s``, in the header's order.

    Returns
    -------
    bytes
        UTF-8, one line per frame, each ending with a newline: a frame's line depends only on
        its own values, so the rows of consecutive frame ranges concatenate to those of the
        whole range.
    """
    columns = [times] + [c.astype(np.float64) for c in columns]
    table = np.column_stack(columns) if times.size else np.empty((0, len(columns)))
    # %.7g keeps float32 precision without printing float64 noise. One %-format per block of
    # rows, not np.savetxt's one per row: half the time on an hour of frames.
    row = ",".join(["%.7g"] * table.shape[1]) + "\n"
    parts = []
    for start in range(0, len(table), _CSV_BLOCK_ROWS):
        block = table[start : start + _CSV_BLOCK_ROWS]
        parts.append((row * len(block)) % tuple(block.ravel().tolist()))
    return "".join(parts).encode("utf-8")


def frames_to_npz(analysis: Analysis) -> bytes:
    """Compressed NPZ: one float32 array per series, plus ``time_s`` and scalar ``hop_s``.

    ``analysis.npz`` when the chunked merge made it already (``series_to_npz`` of the same
    series).
    """
    if analysis.npz is not None:
        return analysis.npz
    return series_to_npz(analysis.frames, hop_s=analysis.hop_s)


def series_to_npz(frames: dict[str, np.ndarray], *, hop_s: float) -> bytes:
    """The bytes of ``frames_to_npz`` from the frame series and the hop alone.

    Parameters
    ----------
    frames : dict[str, np.ndarray]
        ``Analysis.frames``.
    hop_s : float
        ``Analysis.hop_s``.
    """
    n = len(next(iter(frames.values()))) if frames else 0
    out = io.BytesIO()
    arrays: dict[str, Any] = {"time_s": np.arange(n) * hop_s, "hop_s": np.float64(hop_s)}
    arrays.update({name: np.asarray(v, np.float32) for name, v in frames.items()})
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def segments_to_json(analysis: Analysis) -> bytes:
    """UTF-8 JSON: the list of ``analysis.segments`` (docs/result.md, "Segments"), numbers as
    plain floats (a numpy scalar is not JSON) and never NaN."""
    # find_segments emits plain floats; ``default`` only meets a numpy value that is not a
    # float subclass (np.float64 is one and prints as the float it is). No walk over the
    # ~2 MB of an hour's segments to look for them.
    return json.dumps(
        analysis.segments, allow_nan=False, separators=(",", ":"), default=_plain
    ).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
