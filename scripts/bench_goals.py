"""`make bench` (last part): issue 15's goals against what this `make bench` measured.

Reads the raw figures the other bench scripts of the same `make bench` left under .bench/
(results.json from scripts/bench.py, pipelines.json, chunks.json), measures what none of them
does (the task's cost outside ``analyze_file``, the cold start of a fresh `earshot dev`, and a
long file as a whole `earshot analyze` process against a whole decoding process), and prints
one table: each goal, its target, the figure, ✓ or ✗, and the command and load average the
figure came with. The table is written into docs/benchmarks.md between its own markers.

    .venv/bin/python scripts/bench_goals.py [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from scripts.bench.harness import write_section  # noqa: E402 - needs ROOT on sys.path
from scripts.bench_pipelines import ratios_to_seed  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
CACHE = ROOT / ".bench"
PYTHON = ROOT / ".venv" / "bin" / "python"
MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
# The long file timed as whole processes: a 214-s track (the bench's "cold vs warm" one).
LONG_TRACK = MUSIC / "legends_of_the_north.ogg"
WHOLE_RUNS = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_json(name: str) -> dict[str, Any] | None:
    path = CACHE / name
    return json.loads(path.read_text()) if path.exists() else None


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- what the other scripts do not measure -----------------------------------------------


def overhead_ms(clip: Path) -> tuple[float, float, str]:
    """(median ms outside analyze_file, median analyze_file ms, load) from overhead.py."""
    load = loadavg()
    out = subprocess.run(
        [str(PYTHON), "scripts/bench/overhead.py", str(clip), "--jobs", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"analyze_file ([0-9.]+), outside it median ([0-9.]+)", out)
    if found is None:
        raise SystemExit(f"bench_goals: overhead.py printed {out!r}")
    return float(found.group(2)), float(found.group(1)), load


def cold_start_s(clip: Path) -> tuple[float, str]:
    """Seconds from `earshot dev`'s start to the first 5-second upload succeeded, on a fresh
    clone of HEAD using this checkout's virtualenv and the numba cache `make install` filled."""
    with tempfile.TemporaryDirectory(prefix="earshot-goals-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        load = loadavg()
        out = subprocess.run(
            ["bash", str(clone / "scripts/bench/coldstart.sh"), str(clip)],
            env={**os.environ, "PYTHON": str(PYTHON)},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
    found = re.search(r"first upload succeeded after ([0-9.]+) s", out)
    if found is None:
        raise SystemExit(f"bench_goals: coldstart.sh printed {out!r}")
    return float(found.group(1)), load


def whole_process_s(argv: list[str]) -> float:
    best = float("inf")
    for _ in range(WHOLE_RUNS):
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def long_file_whole_process(path: Path) -> tuple[float, float, str]:
    """(earshot analyze s, decode s), each the fastest of WHOLE_RUNS fresh processes."""
    load = loadavg()
    decode = whole_process_s(
        [
            str(PYTHON),
            "-c",
            "import sys, soundfile; soundfile.read(sys.argv[1], dtype='float32')",
            str(path),
        ]
    )
    earshot = whole_process_s([str(ROOT / ".venv" / "bin" / "earshot"), "analyze", str(path)])
    return earshot, decode, load


# --- the table ---------------------------------------------------------------------------


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


def goals(args: argparse.Namespace) -> list[tuple[str, str, str, bool | None, str]]:
    """(goal, target, figure, met, where it came from) rows."""
    rows: list[tuple[str, str, str, bool | None, str]] = []
    pipelines = load_json("pipelines.json")
    if pipelines:
        where = f"`{pipelines['command']}`, {pipelines['started'][:16]}"
        runs = [{"round": 0, **r} for r in pipelines["runs"]]  # runs before rounds: one
        for (clip_s, uploaders, pipeline), by_round in ratios_to_seed(runs).items():
            ratio = statistics.median(by_round)
            loads = [
                r["load"] for r in runs if (r["clip_s"], r["uploaders"]) == (clip_s, uploaders)
            ]
            rows.append(
                (
                    f"throughput, {clip_s}-s clips, {uploaders} uploader(s), {pipeline}",
                    "≥ 2 x seed",
                    f"{ratio:.2f} x median of {len(by_round)} round(s): "
                    f"{', '.join(f'{x:.2f}' for x in by_round)} "
                    f"(load {min(loads):.2f}-{max(loads):.2f})",
                    ratio >= 2.0,
                    where,
                )
            )
        inproc = pipelines.get("in_process_cpu_ms") or {}
        if "earshot 5" in inproc and "tutorial 5" in inproc:
            ear = statistics.median(inproc["earshot 5"])
            tut = statistics.median(inproc["tutorial 5"])
            rows.append(
                (
                    "fixed per-file analysis cost (5-s clip, warm, CPU)",
                    "halved (issue: 70-90 ms, tutorial's share)",
                    f"{ear:.0f} ms vs tutorial {tut:.0f} ms ({tut / ear:.1f} x less)",
                    ear <= tut / 2,
                    where,
                )
            )
        flood = pipelines.get("flood")
        if flood:
            longest = max(flood["batch_task_ms"], default=float("nan"))
            worst = max(flood["interactive_wait_ms"], default=float("nan"))
            rows.append(
                (
                    "a batch uses every core (`earshot dev`)",
                    "processes = cores",
                    f"{flood['processes']} / {flood['cores']} "
                    f"({flood['batch_jobs'] / flood['wall_s']:.1f} jobs/s; load "
                    f"{flood['load']:.2f})",
                    flood["processes"] >= flood["cores"],
                    where,
                )
            )
            rows.append(
                (
                    "interactive upload during a batch flood starts within one task",
                    "wait ≤ longest batch task",
                    f"waits {', '.join(f'{w:.0f}' for w in flood['interactive_wait_ms'])} ms; "
                    f"longest task {longest:.0f} ms",
                    worst <= longest,
                    where,
                )
            )
    clip = CACHE / "clips" / "5s" / "clip000.ogg"
    if clip.exists():
        outside, inside, load = overhead_ms(clip)
        rows.append(
            (
                "per-job cost outside `analyze_file` (task body, embedded, CPU)",
                "≤ 10 ms",
                f"{outside:.1f} ms (analyze_file {inside:.0f} ms)",
                outside <= 10.0,
                f"`scripts/bench/overhead.py {clip.relative_to(ROOT)} --jobs 30`, load {load}",
            )
        )
        if not args.no_cold_start:
            seconds, load = cold_start_s(clip)
            rows.append(
                (
                    "`make run` → first 5-s upload succeeded (fresh clone)",
                    "≤ 15 s",
                    f"{seconds:.1f} s",
                    seconds <= 15.0,
                    f"`scripts/bench/coldstart.sh` on a clone of HEAD, load {load}",
                )
            )
    results = load_json("results.json")
    if results:
        where = f"`{results.get('command', 'scripts/bench.py')}`, {results['started'][:16]}"
        table = results["table"]
        ear = sum(r["cpu_s"] for r in table["earshot"]["runs"])
        dec = sum(r["cpu_s"] for r in table["decode"]["runs"])
        # earshot decodes Ogg Vorbis with FFmpeg, faster than the soundfile floor: that
        # decoder's own time is printed beside the ratio, so neither hides the other.
        ffmpeg = table.get("decode_ffmpeg", {})
        own = (
            f"; FFmpeg decode alone {sum(r['cpu_s'] for r in ffmpeg['runs']):.1f} s"
            if ffmpeg.get("runs")
            else ""
        )
        if dec > 0:
            rows.append(
                (
                    "long files, warm in-process (the bench's file set, CPU)",
                    "≤ 1.5 x decode",
                    f"{ear / dec:.2f} x ({ear:.1f} vs {dec:.1f} s{own}; load "
                    f"{results.get('load_at_start', float('nan')):.2f})",
                    ear / dec <= 1.5,
                    where,
                )
            )
        for row in results.get("series", []):
            if row["minutes"] == 60 and not row["earshot"].get("skipped"):
                rss = row["earshot"]["peak_rss_mib"]
                rows.append(
                    ("peak memory, 60-min file", "≤ 400 MB", f"{rss:.0f} MiB", rss <= 400, where)
                )
    if LONG_TRACK.exists():
        earshot, decode, load = long_file_whole_process(LONG_TRACK)
        rows.append(
            (
                f"long file as whole processes (`earshot analyze {LONG_TRACK.name}`, 214 s)",
                "printed beside the warm figure",
                f"{earshot / decode:.2f} x ({earshot:.2f} vs {decode:.2f} s decode, best of "
                f"{WHOLE_RUNS})",
                None,
                f"whole processes timed here, load {load}",
            )
        )
    chunks = load_json("chunks.json")
    if chunks:
        res = chunks["results"]
        one = res.get("chunked, --concurrency 1")
        two = res.get("chunked, --concurrency 2")
        if one and two:
            ratio = one["wall_s"] / two["wall_s"]
            best = one["best_s"] / two["best_s"]
            loads = [x for r in res.values() for x in r["loads"]]
            rows.append(
                (
                    "hour-long file, 2 processes vs 1 (upload to succeeded)",
                    "≥ 1.7 x",
                    f"{ratio:.2f} x median, {best:.2f} x best ({one['wall_s']:.1f} vs "
                    f"{two['wall_s']:.1f} s; load {min(loads):.1f}-{max(loads):.1f})",
                    ratio >= 1.7,
                    f"`{chunks['command']}`, {chunks['started'][:16]}",
                )
            )
    return rows


def render(rows: list[tuple[str, str, str, bool | None, str]], started: datetime.datetime) -> str:
    lines = [
        "## Issue 15's goals, as the last `make bench` measured them",
        "",
        f"Written {started:%Y-%m-%d %H:%M} UTC by `scripts/bench_goals.py` (the last step of "
        f"`make bench`) from the figures the steps before it left in `.bench/`, plus what it "
        "times itself; each row names the command and the load average its figure came with "
        f"(2-CPU machine: {os.cpu_count()} CPUs).",
        "",
        "| goal | target | measured | met | from |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {g} | {t} | {f} | {mark(ok)} | {w} |" for g, t, f, ok, w in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold start")
    # `make bench BENCH_ARGS=…` passes the other scripts' options here too.
    args, _ = parser.parse_known_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    section = render(goals(args), started)
    print(section)
    if not args.no_write:
        write_section(DOC, "bench_goals.py", section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
