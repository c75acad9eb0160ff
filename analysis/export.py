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
    """UTF-8 CSV: a ``time_s`` column then one column per series, one row per frame."""
    names = list(analysis.frames)
    columns = [frame_times(analysis)] + [analysis.frames[n].astype(np.float64) for n in names]
    table = np.column_stack(columns) if columns[0].size else np.empty((0, len(columns)))
    # %.7g keeps float32 precision without printing float64 noise. One %-format per block of
    # rows, not np.savetxt's one per row: half the time on an hour of frames.
    row = ",".join(["%.7g"] * table.shape[1]) + "\n"
    parts = [",".join(["time_s", *names]) + "\n"]
    for start in range(0, len(table), _CSV_BLOCK_ROWS):
        block = table[start : start + _CSV_BLOCK_ROWS]
        parts.append((row * len(block)) % tuple(block.ravel().tolist()))
    return "".join(parts).encode("utf-8")


def frames_to_npz(analysis: Analysis) -> bytes:
    """Compressed NPZ: one float32 array per series, plus ``time_s`` and scalar ``hop_s``."""
    out = io.BytesIO()
    arrays: dict[str, Any] = {"time_s": frame_times(analysis), "hop_s": np.float64(analysis.hop_s)}
    arrays.update({name: np.asarray(v, np.float32) for name, v in analysis.frames.items()})
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def segments_to_json(analysis: Analysis) -> bytes:
    """UTF-8 JSON: the list of ``analysis.segments`` (docs/result.md, "Segments"), numbers as
    plain floats (a numpy scalar is not JSON) and never NaN."""
    return json.dumps(_plain(analysis.segments), allow_nan=False, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
