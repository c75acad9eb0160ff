"""`make check-outputs REF=...`: are the files a job stores byte-identical between two revisions?

    .venv/bin/python scripts/check_outputs.py --ref A [--ref B] [--tracks]

Each ``--ref`` is exported with ``git archive`` into ``.bench/outputs/<sha>/tree``; with one
``--ref`` the other side is the working tree as it is now (uncommitted changes included). Every
input is analysed on each side with both profiles (``standard`` and ``fast``) and the three
files the job stores, ``result.json``, ``frames.csv`` and ``frames.npz``, are compared by
sha256. A table shows every input, profile and file as ``same`` or ``DIFFERENT``, and each
difference says where: JSON the first differing key path, CSV the first differing line, NPZ
the arrays that differ. Exit status 0 only if everything is identical.

Inputs: every audio file in samples/; two synthetic files (chords, clicks, noise; seeded,
cached under .bench/outputs/inputs/) that the worker splits into chunks (tasks/chunks.py +
analysis/chunks.py): long-chunked.wav, 150 s under a lowered threshold (below), and
long-default.flac, 21 minutes, just past the default 1200 s threshold. With ``--tracks`` also
the 41 wesnoth tracks the benchmark uses (scripts/bench.py ``wesnoth_tracks``, which installs
Debian's wesnoth-1.16-music on demand; never committed) and the benchmark's 30-minute
concatenation of them (scripts/bench.py ``build_long_file``, cached as
.bench/wesnoth-30min.ogg), chunked with the default settings. The table's "job path" column
says how the worker ran each job: whole, or in how many chunks.

Why the outputs are the worker's own. This process imports none of the project's packages
(issue 14 moves them while this check must run on both sides of the move). Each side runs in a
subprocess (``--drive``) with the project's venv python, cwd and PYTHONPATH set to that side's
tree and the editable install's import hook removed, so only that tree's code is imported
(checked after the run: a module of ours loaded from anywhere else fails the side). The driver
does what the service does with an upload, not a re-creation of it: it builds the runtime
from the settings (embedded mode: SQLite and the local blob store in a throw-away data dir),
stores the upload in the blob store and creates the job as the API does, applies the
``earshot.analyze`` Celery task in-process (as tests/tasks/test_chunks.py does), applies the
``earshot.analyze_chunk`` tasks of a job the worker split, and reads the three files back from
the blob store where the worker stored them. Modules are looked up by their old place first
and then their new one (``tasks.settings`` then ``core.settings`` …); the tasks are found by
their registered names, which do not move.

Both sides run on the same installed libraries (the project's venv: numpy, librosa, soxr …),
so a difference comes from the project's code, not from a library version; a ref that needs
other library versions is not checked against those. One run at a time: the trees, inputs
and results are kept under .bench/outputs/ (a second run waits for the first to end).

Settings: every ``EARSHOT_*`` variable is dropped so both sides run on the defaults (the
limits the worker applies come from those settings). The chunked input lowers the chunk
threshold (EARSHOT_CHUNK_MIN_DURATION_S=60, EARSHOT_CHUNK_DURATION_S=50: three chunks, the
last shorter); every other input runs on the defaults.

Volatile bytes: none. result.json holds no wall-clock value (no timing, date or host: the
document is built from the audio, the profile and ANALYZER_VERSION only), frames.csv neither.
frames.npz is a zip written by ``numpy.savez_compressed`` through ``ZipFile.open(name, "w")``,
which stamps every member 1980-01-01 00:00:00 rather than the time of writing (checked: two
NPZ of the same arrays written seconds apart are byte-identical). So all three files are
compared byte for byte, nothing is masked. Should a change start stamping real times, the
NPZ shows as DIFFERENT and the detail says that only the zip headers' times differ.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench" / "outputs"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

PROFILES = ("standard", "fast")
ARTIFACTS = ("result.json", "frames.csv", "frames.npz")
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aif", ".aiff"}
OUR_PACKAGES = ("analysis", "tasks", "core", "api", "earshot", "client")

# The chunked input: long enough for three chunks under the lowered threshold below.
LONG_SECONDS = 150.0
LONG_SR = 22050
CHUNK_ENV = {"EARSHOT_CHUNK_MIN_DURATION_S": "60", "EARSHOT_CHUNK_DURATION_S": "50"}
# Just over the default EARSHOT_CHUNK_MIN_DURATION_S (1200 s): two chunks of 600 s and 660 s
# (analysis/chunks.py gives the last chunk the remainder).
DEFAULT_CHUNKED_SECONDS = 1260.0
# One side's run may not take longer than this (the tracks take minutes on a busy machine).
SIDE_TIMEOUT_S = 3 * 3600


class CheckError(Exception):
    """Raised when the check cannot run: an unknown ref, a side whose driver failed."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the sides ---------------------------------------------------------------------------


@dataclass
class Side:
    label: str  # what the table calls it: the short sha, or "working tree"
    tree: Path  # the code it runs
    out: Path  # where its driver writes the files


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()


def export_ref(ref: str, slot: str) -> Side:
    """`git archive` the whole tree at ``ref`` into .bench/outputs/<sha>/tree (kept as a cache).

    ``slot`` ("a" or "b") keeps the results of the two sides apart when both are the same
    commit (which checks that a revision is deterministic: two runs, the same bytes).
    """
    sha = git("rev-parse", "--short=12", f"{ref}^{{commit}}")
    if not sha:
        raise CheckError(f"--ref {ref!r} is not a commit in {ROOT}")
    base = CACHE / sha
    tree = base / "tree"
    done = base / "tree.complete"
    if not done.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", sha], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        done.touch()
    label = f"{ref} ({sha})" if ref != sha else sha
    return Side(label=label, tree=tree, out=base / f"results-{slot}")


def working_tree() -> Side:
    dirty = " with uncommitted changes" if git("status", "--porcelain") else ""
    label = f"working tree ({git('rev-parse', '--short=12', 'HEAD')}{dirty})"
    return Side(label=label, tree=ROOT, out=CACHE / "worktree" / "results")


# --- the inputs --------------------------------------------------------------------------


def build_long_file(name: str, seconds: float) -> Path:
    """A seeded mono file of chords, clicks and a little noise, cached under .bench/outputs/.

    Written a minute at a time, so the 21-minute one never holds more than a minute of samples.
    """
    import numpy as np
    import soundfile as sf

    path = CACHE / "inputs" / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    chords = np.array([(220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (196.0, 246.94, 293.66)])
    bar_s = 2.0  # seconds per chord
    step = round(LONG_SR * 60.0 / 112.0)  # a click every beat at 112 BPM
    click = 0.6 * np.hanning(300)
    total = int(seconds * LONG_SR)
    tmp = path.with_name("tmp-" + name)
    with sf.SoundFile(tmp, "w", LONG_SR, 1, subtype="PCM_16") as out:
        for first in range(0, total, 60 * LONG_SR):
            n = np.arange(first, min(first + 60 * LONG_SR, total))
            t = n / LONG_SR
            freqs = chords[(t // bar_s).astype(np.int64) % len(chords)]
            y = 0.08 * np.sin(2 * np.pi * freqs * t[:, None]).sum(axis=1)
            offset = n % step
            near = offset < click.size
            y[near] += click[offset[near]]
            y += 0.01 * rng.standard_normal(y.size)
            out.write(np.clip(y, -1, 1).astype(np.float32))
    tmp.replace(path)
    return path


def load_bench() -> ModuleType:
    """scripts/bench.py by file path: it imports soundfile, none of the project's packages."""
    spec = importlib.util.spec_from_file_location("earshot_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def inputs(tracks: bool) -> list[dict[str, Any]]:
    """What each side analyses: a name for the table, the file, extra settings."""
    cases: list[dict[str, Any]] = [
        {"name": p.name, "path": str(p), "env": {}}
        for p in sorted((ROOT / "samples").iterdir())
        if p.suffix.lower() in AUDIO_SUFFIXES
    ]
    short = build_long_file("long-chunked.wav", LONG_SECONDS)
    cases.append({"name": short.name, "path": str(short), "env": CHUNK_ENV})
    # Past the default threshold: chunked as the worker does it out of the box.
    long = build_long_file("long-default.flac", DEFAULT_CHUNKED_SECONDS)
    cases.append({"name": long.name, "path": str(long), "env": {}})
    if tracks:
        bench = load_bench()
        found, source = bench.wesnoth_tracks()
        log(f"tracks: {len(found)} from {source}")
        cases += [{"name": f"wesnoth/{t.path.name}", "path": str(t.path), "env": {}} for t in found]
        concatenated = bench.build_long_file(found, 30)
        cases.append({"name": f"wesnoth/{concatenated.name}", "path": str(concatenated), "env": {}})
    return cases


# --- running one side ----------------------------------------------------------------------


def run_side(side: Side, cases: list[dict[str, Any]]) -> None:
    shutil.rmtree(side.out, ignore_errors=True)
    side.out.mkdir(parents=True)
    manifest = side.out / "manifest.json"
    manifest.write_text(json.dumps({"tree": str(side.tree), "cases": cases}, indent=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
    env["PYTHONPATH"] = str(side.tree)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.monotonic()
    log(f"{side.label}: analysing {len(cases)} inputs, {len(PROFILES)} profiles each …")
    proc = subprocess.run(
        [str(VENV_PYTHON), str(Path(__file__).resolve()), "--drive", str(manifest)],
        cwd=side.tree,
        env=env,
        timeout=SIDE_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckError(f"{side.label}: the driver exited with status {proc.returncode}")
    log(f"{side.label}: done in {time.monotonic() - started:.0f} s")


def first(candidates: tuple[str, ...], attr: str) -> Any:
    """``attr`` of the first module in ``candidates`` that imports and has it."""
    errors = []
    for name in candidates:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            errors.append(f"{name}: {exc}")
            continue
        if hasattr(module, attr):
            log(f"  {attr}: {name}")
            return getattr(module, attr)
        errors.append(f"{name}: no {attr}")
    raise CheckError(f"cannot find {attr}: " + "; ".join(errors))


def drive(manifest_path: Path) -> int:
    """The subprocess: run every case through the worker's tasks on this side's tree."""
    import logging

    manifest = json.loads(manifest_path.read_text())
    tree = Path(manifest["tree"]).resolve()
    out = manifest_path.parent
    # The venv's editable install maps our package names to /work/main through a meta path
    # finder; without it only PYTHONPATH (this side's tree) can provide them.
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in _module_of(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in _module_of(h)]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    sys.path.insert(0, str(tree))
    sys.path_importer_cache.clear()
    logging.basicConfig(level=logging.WARNING)
    # The filesystem transport's "No hostname was supplied" on every runtime.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)

    names = ("tasks.names", "core.names")
    Settings = first(("tasks.settings", "core.settings"), "Settings")
    build_runtime = first(("tasks.runtime", "core.runtime"), "build_runtime")
    new_job_id = first(("tasks.jobs", "core.jobs"), "new_job_id")
    upload_key = first(names, "upload_key")
    analyze_task = first(names, "ANALYZE_TASK")
    chunk_task = first(names, "ANALYZE_CHUNK_TASK")
    interactive = first(names, "Priority").INTERACTIVE.value
    for task_module in ("tasks.analyze", "tasks.chunks"):  # registers the Celery tasks
        importlib.import_module(task_module)

    for case in manifest["cases"]:
        data = Path(case["path"]).read_bytes()
        for profile in PROFILES:
            dest = out / case["name"] / profile
            dest.mkdir(parents=True)
            with (
                tempfile.TemporaryDirectory(prefix="earshot-check-") as tmp,
                env_vars({"EARSHOT_DATA_DIR": str(Path(tmp) / "var"), **case["env"]}),
            ):
                runtime = build_runtime(Settings())
                try:
                    job_id = new_job_id()
                    runtime.blobs.put_bytes(upload_key(job_id), data)
                    runtime.jobs.create(
                        job_id=job_id,
                        upload_key=upload_key(job_id),
                        filename=Path(case["path"]).name,
                        size_bytes=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        profile=profile,
                        priority=interactive,
                    )
                    runtime.celery.tasks[analyze_task].apply(args=[job_id]).get()
                    # A job the worker split: its chunks, as the chunk workers would run them.
                    chunks = runtime.jobs.pending_chunks(job_id)
                    for index in chunks:
                        runtime.celery.tasks[chunk_task].apply(args=[job_id, index]).get()
                    path = f"{len(chunks)} chunks" if chunks else "whole"
                    (dest / "path.txt").write_text(path + "\n")
                    job = runtime.jobs.get(job_id)
                    if job.result_prefix and str(job.status.value) == "succeeded":
                        for artifact in ARTIFACTS:
                            blob = runtime.blobs.get_bytes(job.result_prefix + artifact)
                            (dest / artifact).write_bytes(blob)
                    else:
                        (dest / "failed.txt").write_text(
                            f"{job.status.value}: {job.error_code}: {job.error_message}\n"
                        )
                finally:
                    runtime.close()
            print(f"  {case['name']} {profile}: done", file=sys.stderr, flush=True)

    strays = []
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] not in OUR_PACKAGES:
            continue
        places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []))]
        strays += [f"{name} from {p}" for p in places if p and not Path(p).is_relative_to(tree)]
    if strays:
        print("modules loaded from outside " + str(tree) + ": " + ", ".join(strays))
        return 1
    return 0


def _module_of(obj: Any) -> str:
    return str(getattr(obj, "__module__", "") or type(obj).__module__)


class env_vars:
    """Set environment variables for a block, then restore the previous values."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- comparing ---------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npz_masked(data: bytes) -> bytes:
    """The NPZ with the date/time of every zip header zeroed, to tell why two NPZ differ."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if out[info.header_offset : info.header_offset + 4] != b"PK\x03\x04":
                raise CheckError("frames.npz: a local header is not where the directory says")
            out[info.header_offset + 10 : info.header_offset + 14] = bytes(4)
        pos = out.rfind(b"PK\x05\x06")
        count, _size, offset = struct.unpack("<HII", out[pos + 10 : pos + 20])
        if offset == 0xFFFFFFFF:  # zip64: the central directory offset is in the zip64 record
            z64 = out.rfind(b"PK\x06\x06", 0, pos)
            count, _size, offset = struct.unpack("<QQQ", out[z64 + 32 : z64 + 56])
        for _ in range(count):
            if out[offset : offset + 4] != b"PK\x01\x02":
                raise CheckError("frames.npz: a central directory entry is not where expected")
            out[offset + 12 : offset + 16] = bytes(4)
            n, m, k = struct.unpack("<HHH", out[offset + 28 : offset + 34])
            offset += 46 + n + m + k
    return bytes(out)


def json_differences(a: Any, b: Any, path: str = "$") -> Iterator[str]:
    """Every differing value (or key set, or list length) between two parsed documents."""
    if type(a) is not type(b):
        yield f"{path}: {a!r:.60} ({type(a).__name__}) vs {b!r:.60} ({type(b).__name__})"
    elif isinstance(a, dict):
        for key in dict.fromkeys([*a, *b]):
            if key not in a or key not in b:
                yield f"{path}.{key}: only in {'A' if key in a else 'B'}"
            else:
                yield from json_differences(a[key], b[key], f"{path}.{key}")
        if set(a) == set(b) and list(a) != list(b):
            yield f"{path}: the same keys in another order"
    elif isinstance(a, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from json_differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r} vs {b!r}"


def where(artifact: str, a: bytes, b: bytes) -> str:
    """Where two different files first differ."""
    if artifact.endswith(".json"):
        try:
            found = list(json_differences(json.loads(a), json.loads(b)))
        except ValueError as exc:
            return f"not JSON on one side: {exc}"
        if not found:
            return "equal as JSON; the bytes differ (formatting or escaping)"
        more = f" (and {len(found) - 1} more differing values)" if len(found) > 1 else ""
        return found[0] + more
    if artifact.endswith(".csv"):
        la, lb = a.decode().splitlines(), b.decode().splitlines()
        for i, (x, y) in enumerate(zip(la, lb, strict=False), start=1):
            if x != y:
                return f"line {i}: {x[:100]!r} vs {y[:100]!r}"
        return f"{len(la)} vs {len(lb)} lines"
    import numpy as np

    with np.load(io.BytesIO(a)) as za, np.load(io.BytesIO(b)) as zb:
        ka, kb = list(za.files), list(zb.files)
        if ka != kb:
            return f"arrays {ka} vs {kb}"
        differing = []
        for key in ka:
            x, y = za[key], zb[key]
            if x.dtype != y.dtype or x.shape != y.shape:
                differing.append(f"{key} ({x.dtype}{x.shape} vs {y.dtype}{y.shape})")
            elif x.tobytes() != y.tobytes():
                count = int(
                    np.count_nonzero(x.reshape(-1).view(np.uint8) != y.reshape(-1).view(np.uint8))
                )
                differing.append(f"{key} ({count} bytes differ)")
    if differing:
        return "arrays " + ", ".join(differing)
    if npz_masked(a) == npz_masked(b):
        return "every array is equal; only the zip headers' modification times differ"
    return "every array is equal; the zip container differs (compression or headers)"


@dataclass
class Row:
    name: str
    profile: str
    path: str  # how the worker ran the job: "whole" or "N chunks" (A's; B's if it differs)
    verdicts: dict[str, str]
    details: list[str]


def compare_one(name: str, profile: str, a: Side, b: Side) -> Row:
    verdicts: dict[str, str] = {}
    details: list[str] = []
    da, db = a.out / name / profile, b.out / name / profile
    pa, pb = (
        (d / "path.txt").read_text().strip() if (d / "path.txt").exists() else "?" for d in (da, db)
    )
    path = pa if pa == pb else f"{pa} vs {pb}"
    fa, fb = da / "failed.txt", db / "failed.txt"
    if fa.exists() or fb.exists():
        ta = fa.read_text().strip() if fa.exists() else "succeeded"
        tb = fb.read_text().strip() if fb.exists() else "succeeded"
        same = ta == tb
        for artifact in ARTIFACTS:
            verdicts[artifact] = "same (failed)" if same else "DIFFERENT"
        if not same:
            details.append(f"job: {ta} vs {tb}")
        return Row(name, profile, path, verdicts, details)
    for artifact in ARTIFACTS:
        xa, xb = (da / artifact).read_bytes(), (db / artifact).read_bytes()
        if sha256(xa) == sha256(xb):
            verdicts[artifact] = "same"
        else:
            verdicts[artifact] = "DIFFERENT"
            details.append(f"{artifact}: {where(artifact, xa, xb)}")
    return Row(name, profile, path, verdicts, details)


def table(rows: list[Row]) -> Iterator[str]:
    width = max(len(r.name) for r in rows)
    paths = max(len("job path"), *(len(r.path) for r in rows))
    head = " | ".join(f"{a:<11}" for a in ARTIFACTS)
    yield f"| {'input':<{width}} | profile  | {'job path':<{paths}} | {head} |"
    rule = "|".join("-" * 13 for _ in ARTIFACTS)
    yield f"|{'-' * (width + 2)}|----------|{'-' * (paths + 2)}|{rule}|"
    for r in rows:
        cells = " | ".join(f"{r.verdicts[a]:<11}" for a in ARTIFACTS)
        yield f"| {r.name:<{width}} | {r.profile:<8} | {r.path:<{paths}} | {cells} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--ref",
        action="append",
        default=[],
        help="a git revision; give it twice to compare two (default other side: working tree)",
    )
    parser.add_argument("--tracks", action="store_true", help="also the wesnoth bench tracks")
    parser.add_argument("--drive", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        return drive(args.drive)
    if not 1 <= len(args.ref) <= 2:
        parser.error("give --ref once (against the working tree) or twice")
    if not VENV_PYTHON.exists():
        parser.error(f"{VENV_PYTHON} is missing: run `make install` first")

    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CACHE / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"another check_outputs run is using {CACHE}: waiting for it to end …")
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        sides = [export_ref(r, slot) for r, slot in zip(args.ref, "ab", strict=False)]
        if len(sides) == 1:
            sides.append(working_tree())
        cases = inputs(args.tracks)
        for side in sides:
            run_side(side, cases)
    except (CheckError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log(f"error: {exc}")
        return 2

    a, b = sides
    rows = [compare_one(c["name"], p, a, b) for c in cases for p in PROFILES]
    print(f"A = {a.label}\nB = {b.label}\n")
    print("\n".join(table(rows)))
    details = [f"- {r.name} {r.profile}: {d}" for r in rows for d in r.details]
    total = len(rows) * len(ARTIFACTS)
    bad = sum(v == "DIFFERENT" for r in rows for v in r.verdicts.values())
    if details:
        print("\nwhere they differ:\n" + "\n".join(details))
    print(f"\n{total - bad} of {total} files identical ({len(rows)} jobs per side)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
