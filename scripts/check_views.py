"""Check the Spotify-shaped views on real music: the tracks of `make bench`, or the files given.

Each file is analysed in-process (``analyze_file``, the standard profile unless ``--profile``)
and both views are built as the API builds them (``analysis.views``), then held to what must
hold whatever the music:

- each view validates (``jsonschema``) against the schema of the OpenAPI document the real app
  serves (``AudioFeatures``, ``AudioAnalysis``);
- ``duration_ms`` is the decoded length in milliseconds, counted by decoding with soundfile;
- the bars start at the document's downbeats, and each bar spans the beats inside it;
- the beats' durations sum to their span, and nothing lasts past the end of the file;
- the sections and the segments are contiguous and cover the file.

One line per file, then a summary; exit status 1 when any file breaks a rule. With no files,
the tracks of Debian's wesnoth-1.16-music package (GPL, never committed), as `make bench`.

    .venv/bin/python scripts/check_views.py [FILE ...] [--profile fast]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile as sf
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import analyze_file  # noqa: E402
from analysis.views import audio_analysis, audio_features  # noqa: E402

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
# Seconds two times may differ and still be "the same" (the views round to 10 µs, the
# document's beat times to 100 µs).
TOLERANCE_S = 2e-3
VIEWS = {"audio-features": "AudioFeatures", "audio-analysis": "AudioAnalysis"}


def served_validators() -> dict[str, Draft202012Validator]:
    """A validator per view, of the schema the real app's /openapi.json serves."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.settings import Settings

    with (
        tempfile.TemporaryDirectory() as data_dir,
        TestClient(create_app(Settings(data_dir=Path(data_dir)))) as client,
    ):
        openapi = client.get("/openapi.json").json()
    registry: Registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(openapi, default_specification=DRAFT202012)
    )
    validators = {}
    for name, schema in VIEWS.items():
        path = openapi["paths"][f"/v1/analyses/{{job_id}}/{name}"]["get"]
        ref = path["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{schema}", ref
        validators[name] = Draft202012Validator({"$ref": "urn:openapi" + ref}, registry=registry)
    return validators


def problems(path: Path, document: dict[str, Any], features: Any, view: Any) -> list[str]:
    """Every rule the views of ``path`` break (empty when they keep them all)."""
    found: list[str] = []
    # The frames soundfile decodes, not its header's count: an Ogg's last granule position
    # may promise more than the stream holds (northerners.ogg: 5806 frames more).
    decoded = 0
    with sf.SoundFile(str(path)) as f:
        while block := len(f.read(1 << 16, dtype="float32")):
            decoded += block
        expected = round(decoded / f.samplerate * 1000)
    if features["duration_ms"] != expected:
        found.append(f"duration_ms {features['duration_ms']} != {expected} decoded by soundfile")
    end = view["track"]["duration"]
    summary = document["summary"]
    beats, bars = view["beats"], view["bars"]
    if beats:
        span = beats[-1]["start"] + beats[-1]["duration"] - beats[0]["start"]
        if abs(sum(b["duration"] for b in beats) - span) > TOLERANCE_S:
            found.append("beat durations do not sum to their span")
    starts = [round(t, 5) for t in summary.get("downbeats_s", []) if t < end]
    if [b["start"] for b in bars] != starts:
        found.append("bars do not start at the downbeats")
    for bar in bars:
        inside = [
            b["duration"]
            for b in beats
            if bar["start"] - TOLERANCE_S <= b["start"] < bar["start"] + bar["duration"] - 1e-3
        ]
        if abs(sum(inside) - bar["duration"]) > TOLERANCE_S:
            found.append(f"bar at {bar['start']} s does not span its beats")
            break
    for name in ("beats", "bars", "tatums", "sections", "segments"):
        if any(item["start"] + item["duration"] > end + TOLERANCE_S for item in view[name]):
            found.append(f"a {name[:-1]} lasts past the end of the file")
    for name in ("sections", "segments"):
        items = view[name]
        if not items:
            found.append(f"no {name}")
            continue
        covered = (
            items[0]["start"] < TOLERANCE_S
            and abs(items[-1]["start"] + items[-1]["duration"] - end) <= 0.05
        )
        gaps = any(
            abs(a["start"] + a["duration"] - b["start"]) > TOLERANCE_S
            for a, b in itertools.pairwise(items)
        )
        if not covered or gaps:
            found.append(f"{name} do not cover the file contiguously")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files (default: wesnoth)")
    parser.add_argument("--profile", default="standard")
    args = parser.parse_args(argv)
    files = args.files or sorted(WESNOTH_MUSIC.glob("*.ogg"))
    if not files:
        print(f"no files given and none under {WESNOTH_MUSIC}", file=sys.stderr)
        return 2
    validators = served_validators()
    failed = 0
    signatures: dict[int, int] = {}
    started = time.monotonic()
    for path in files:
        analysis = analyze_file(path, profile=args.profile)
        document: dict[str, Any] = dict(analysis.document)
        features = audio_features(document)
        view = audio_analysis(document, analysis.segments)
        found = [
            f"{name}: {error.message}"
            for name, built in (("audio-features", features), ("audio-analysis", view))
            for error in validators[name].iter_errors(built)
        ]
        found += problems(path, document, features, view)
        failed += bool(found)
        signatures[features["time_signature"]] = signatures.get(features["time_signature"], 0) + 1
        print(
            f"{'FAIL' if found else 'ok  '} {path.name}: {view['track']['duration']:.1f} s, "
            f"key {features['key']} mode {features['mode']}, {features['tempo']:.1f} BPM, "
            f"{features['time_signature']}/4, {len(view['bars'])} bars, {len(view['beats'])} "
            f"beats, {len(view['tatums'])} tatums, {len(view['sections'])} sections, "
            f"{len(view['segments'])} segments" + "".join(f"\n     {p}" for p in found),
            flush=True,
        )
    print(
        f"{len(files) - failed}/{len(files)} files: both views valid and every rule kept "
        f"({args.profile} profile, {time.monotonic() - started:.0f} s); time signatures "
        + ", ".join(f"{k}/4: {v}" for k, v in sorted(signatures.items()))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
