"""Build the key/tempo evaluation set in .eval/ from material whose answers are known.

Four sources, each with its ground truth taken from the material or from how we made it, never
from an analyser (earshot's or anyone's):

- ``chorales``: Bach chorales from music21's corpus (MusicXML). Key = the notated key signature
  read as major or relative minor, whichever the final bass note confirms (chorales ending
  elsewhere, e.g. modal ones, are left out). Rendered with fluidsynth at a tempo we set.
- ``folk``: O'Neill's, Ryan's Mammoth and Aird's collections from music21's corpus (ABC). Key =
  the tune's ``K:`` field when it names a major or minor key (modal tunes are left out).
  Melody, plus the chord symbols where the tune has them, at a tempo we set.
- ``synth``: chord progressions in all 24 keys, additive synthesis (three timbres), key and
  tempo by construction.
- ``drums``: a General MIDI drum kit (fluidsynth, channel 10) in 2/4, 3/4, 4/4 and 6/8 at
  60-180 BPM; tempo only (no key).

Tempo is the beat of the meter: a quarter note in 2/4, 3/4 and 4/4, a dotted quarter in 6/8.
Pieces are 20-30 s long. The audio and ``manifest.csv`` go to ``.eval/`` (gitignored: the
corpus encodings are licensed for use, not for redistribution by us as audio).

Needs fluidsynth and GM soundfonts (Debian packages, installed here when missing and run as root)
and music21 (the ``eval`` extra in pyproject.toml, installed here when missing).
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".eval"
SR = 44100
SEED = 12

APT_PACKAGES = (
    "fluidsynth",
    "fluid-soundfont-gm",
    "timgm6mb-soundfont",
    "musescore-general-soundfont-small",
)
SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
)
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# GM programs (0-based): piano, church organ, string ensemble, choir aahs, flute, clarinet,
# nylon guitar, accordion, violin, harpsichord.
CHORALE_PROGRAMS = (0, 19, 48, 52, 68, 6)
FOLK_PROGRAMS = (0, 73, 71, 40, 21, 24, 6)
PAD_PROGRAMS = (48, 0, 24, 19)
TICKS = 480


class EvalSetError(Exception):
    """Raised when the evaluation set cannot be built (a tool or corpus is missing)."""


@dataclass
class Piece:
    file: str
    source: str
    tonic: str  # "" when the piece has no key (drums)
    mode: str
    bpm: float
    meter: str
    origin: str
    soundfont: str
    program: str
    duration_s: float


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_apt() -> None:
    """Install fluidsynth and the soundfonts if missing (apt-get update only when needed)."""
    missing = [p for p in APT_PACKAGES if not _dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EvalSetError(f"missing Debian packages: run `apt-get install {' '.join(missing)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    log(f"installing {' '.join(missing)} …")
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def _dpkg_installed(package: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return out.returncode == 0 and "install ok installed" in out.stdout


def ensure_eval_extra(modules: tuple[str, ...]) -> None:
    """pip-install the pinned ``eval`` extra of pyproject.toml when one of ``modules`` is absent."""
    import importlib.util

    if all(importlib.util.find_spec(m) is not None for m in modules):
        return
    with open(ROOT / "pyproject.toml", "rb") as f:
        pins = tomllib.load(f)["project"]["optional-dependencies"]["eval"]
    log(f"installing the eval extra: {' '.join(pins)} …")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pins], check=True)


# --- a minimal Standard MIDI File writer (format 0) --------------------------------------------


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[float, bytes]], quarter_bpm: float) -> None:
    """``events``: (time in quarter notes, raw MIDI message). Note-offs sort before note-ons."""
    tempo_us = round(60_000_000 / quarter_bpm)
    track = bytearray(b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big"))
    last = 0
    order = sorted(events, key=lambda e: (round(e[0] * TICKS), e[1][0] & 0xF0 != 0x80))
    for when, message in order:
        tick = round(when * TICKS)
        track += _vlq(tick - last) + message
        last = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += TICKS.to_bytes(2, "big")
    path.write_bytes(header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track))


def note(events: list, channel: int, start: float, length: float, pitch: int, vel: int) -> None:
    events.append((start, bytes([0x90 | channel, pitch, vel])))
    events.append((start + max(length, 0.05), bytes([0x80 | channel, pitch, 0])))


def render(midi: Path, wav: Path, soundfont: Path, seconds: float) -> float:
    """Render with fluidsynth, cut to ``seconds`` with a short fade, normalise; return length."""
    raw = wav.with_suffix(".raw.wav")
    subprocess.run(
        [
            *("nice", "-n", "10", "fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(SR)),
            *("-F", str(raw), str(soundfont), str(midi)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    y, sr = sf.read(raw, dtype="float32", always_2d=True)
    raw.unlink()
    y = y[: int(seconds * sr)]
    fade = min(len(y), int(0.5 * sr))
    y[len(y) - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    peak = float(np.max(np.abs(y))) or 1.0
    sf.write(wav, y * (0.9 / peak), sr, subtype="PCM_16")
    return len(y) / sr


# --- sources ------------------------------------------------------------------------------------


def program_change(channel: int, program: int) -> tuple[float, bytes]:
    return (0.0, bytes([0xC0 | channel, program]))


def stream_notes(part) -> list[tuple[float, float, list[int], float]]:
    """(start, length, midi pitches, metrical strength) in quarter notes for every note and chord.

    The strength (music21's ``beatStrength``: 1 on the downbeat, less on weaker beats) sets the
    velocity, as a player accents the meter: an unaccented stream of equal eighth notes has no
    audible meter, and its "beat" would be a guess, not a known answer.
    """
    out = []
    for n in part.stripTies().flatten().notes:
        if "ChordSymbol" in n.classes:
            continue
        pitches = [p.midi for p in n.pitches]
        out.append((float(n.offset), float(n.quarterLength), pitches, float(n.beatStrength)))
    return out


def accented(strength: float, rng: random.Random) -> int:
    return max(1, min(127, round(60 + 40 * strength) + rng.randint(-6, 6)))


def chorales(rng: random.Random, count: int, workdir: Path) -> list[Piece]:
    from music21 import corpus, key, meter

    paths = sorted(corpus.getComposer("bach", fileExtensions=("mxl",)))
    rng.shuffle(paths)
    pieces: list[Piece] = []
    for path in paths:
        if len(pieces) >= count:
            break
        score = corpus.parse(path)
        signatures = list(score.flatten().getElementsByClass(key.KeySignature))
        times = list(score.flatten().getElementsByClass(meter.TimeSignature))
        if not signatures or not times or len(score.parts) < 4:
            continue
        if len({s.sharps for s in signatures}) != 1 or times[0].ratioString not in ("3/4", "4/4"):
            continue
        bass = [n for n in score.parts[-1].flatten().notes]
        if not bass:
            continue
        final_pc = bass[-1].pitches[0].pitchClass
        major_pc = (7 * signatures[0].sharps) % 12
        if final_pc == major_pc:
            mode = "major"
        elif final_pc == (major_pc + 9) % 12:
            mode = "minor"
        else:
            continue
        bpm = round(rng.uniform(60, 110), 1)
        program = rng.choice(CHORALE_PROGRAMS)
        soundfont = SOUNDFONTS[len(pieces) % len(SOUNDFONTS)]
        events = []
        for ch, part in enumerate(score.parts[:4]):
            events.append(program_change(ch, program))
            for start, length, pitches, strength in stream_notes(part):
                for p in pitches:
                    note(events, ch, start, length * 0.95, p, accented(strength, rng))
        name = f"chorales/{Path(str(path)).stem}.wav"
        duration = _render_piece(events, bpm, soundfont, OUT / name, 30.0, workdir)
        if duration < 15.0:
            (OUT / name).unlink()
            continue
        pieces.append(
            Piece(
                name,
                "chorales",
                PITCH_CLASSES[final_pc],
                mode,
                bpm,
                times[0].ratioString,
                f"music21 corpus {Path(str(path)).name}",
                soundfont.name,
                str(program),
                duration,
            )
        )
    return pieces


ABC_MODE = re.compile(r"^\s*([A-G])([#b]?)\s*(m|min|minor|maj|major)?\s*$", re.IGNORECASE)


def _abc_key(field: str) -> tuple[int, str] | None:
    m = ABC_MODE.match(field)
    if not m:
        return None
    pc = "C D EF G A B".index(m.group(1).upper())
    pc = (pc + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    mode = "minor" if (m.group(3) or "").lower() in ("m", "min", "minor") else "major"
    return pc, mode


def folk_tunes() -> list[tuple[str, int, str, str, str]]:
    """(abc text, tonic pc, mode, meter, origin) for every major/minor tune in 2/4 3/4 4/4 6/8."""
    from music21 import corpus

    base = Path(corpus.__file__).parent
    tunes = []
    for folder in ("oneills1850", "ryansMammoth", "airdsAirs"):
        for path in sorted((base / folder).glob("*.abc")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for block in re.split(r"\n(?=X:)", text):
                if not block.startswith("X:"):
                    continue
                fields = dict(
                    (line[:2], line[2:].strip())
                    for line in block.splitlines()
                    if len(line) > 2 and line[1] == ":" and line[0] in "KMLX"
                )
                meter = {"C": "4/4"}.get(fields.get("M:", ""), fields.get("M:", ""))
                parsed = _abc_key(fields.get("K:", ""))
                if parsed is None or meter not in ("2/4", "3/4", "4/4", "6/8"):
                    continue
                number = fields.get("X:", "?")
                tunes.append(
                    (block, parsed[0], parsed[1], meter, f"{folder}/{path.name} X:{number}")
                )
    return tunes


def folk(rng: random.Random, count: int, workdir: Path) -> list[Piece]:
    from music21 import converter, harmony

    tunes = folk_tunes()
    # Minor tunes are few in these collections: draw them and the major ones separately.
    minor = [t for t in tunes if t[2] == "minor"]
    major = [t for t in tunes if t[2] == "major"]
    rng.shuffle(minor)
    rng.shuffle(major)
    pool = [t for trio in zip(minor, major[0::2], major[1::2], strict=False) for t in trio]
    pieces: list[Piece] = []
    for text, tonic, mode, meter_name, origin in pool:
        if len(pieces) >= count:
            break
        try:
            score = converter.parse(text, format="abc")
        except Exception as exc:  # the corpus holds a few tunes music21 cannot parse
            log(f"skipping {origin}: {exc.__class__.__name__}")
            continue
        melody = stream_notes(score)
        if len(melody) < 16:
            continue
        symbols = [
            (float(c.offset), [p.midi for p in c.pitches])
            for c in score.flatten().getElementsByClass(harmony.ChordSymbol)
            if c.pitches
        ]
        end = max(s + d for s, d, _, _ in melody)
        # Repeat on a whole number of bars so the meter keeps its phase across the repeat.
        bar_q = {"2/4": 2.0, "3/4": 3.0, "4/4": 4.0, "6/8": 3.0}[meter_name]
        end = float(np.ceil(end / bar_q - 1e-6) * bar_q)
        beat_q = 1.5 if meter_name == "6/8" else 1.0
        bpm = round(rng.uniform(70, 120) if beat_q == 1.5 else rng.uniform(80, 160), 1)
        seconds = 28.0
        repeats = max(1, int(np.ceil(seconds / (end * 60 / (bpm * beat_q)))))
        program = rng.choice(FOLK_PROGRAMS)
        pad = rng.choice(PAD_PROGRAMS)
        events = [program_change(0, program), program_change(1, pad)]
        for r in range(repeats):
            shift = r * end
            for start, length, pitches, strength in melody:
                for p in pitches:
                    note(events, 0, start + shift, length * 0.9, p, accented(strength, rng))
            for i, (start, pitches) in enumerate(symbols):
                stop = symbols[i + 1][0] if i + 1 < len(symbols) else end
                for p in pitches:
                    p = 48 + (p % 12) if p < 48 or p > 64 else p
                    note(events, 1, start + shift, stop - start, p, 55)
        soundfont = SOUNDFONTS[len(pieces) % len(SOUNDFONTS)]
        name = f"folk/{len(pieces):03d}.wav"
        duration = _render_piece(events, bpm * beat_q, soundfont, OUT / name, seconds, workdir)
        pieces.append(
            Piece(
                name,
                "folk",
                PITCH_CLASSES[tonic],
                mode,
                bpm,
                meter_name,
                origin,
                soundfont.name,
                f"{program}+{pad}" if symbols else str(program),
                duration,
            )
        )
    return pieces


METER_BEATS = {"2/4": 2, "3/4": 3, "4/4": 4, "6/8": 2}


def drum_bar(meter_name: str, rng: random.Random, fill: bool) -> list[tuple[float, int, int]]:
    """(time in beats, GM drum note, velocity) for one bar; the beat is the meter's beat."""
    kick, snare, hat, open_hat, tom = 36, 38, 42, 46, 45
    hits: list[tuple[float, int, int]] = []
    if meter_name == "6/8":
        eighths = [i / 3 for i in range(6)]
        hits += [(t, hat, 70 if i % 3 else 95) for i, t in enumerate(eighths)]
        hits += [(0.0, kick, 110), (1.0, snare, 100)]
        if rng.random() < 0.5:
            hits.append((5 / 3, kick, 80))
    else:
        beats = METER_BEATS[meter_name]
        hits += [
            (i / 2, hat if i % 4 != 3 else open_hat, 90 if i % 2 == 0 else 65)
            for i in range(2 * beats)
        ]
        hits.append((0.0, kick, 115))
        if meter_name == "4/4":
            hits += [(2.0, kick, 100), (1.0, snare, 105), (3.0, snare, 105)]
            if rng.random() < 0.5:
                hits.append((2.5, kick, 80))
        elif meter_name == "3/4":
            hits += [(1.0, snare, 95), (2.0, snare, 95)]
        else:
            hits += [(1.0, snare, 105)]
    if fill:
        last = METER_BEATS[meter_name] - 1
        hits += [(last + i / 4, tom if i % 2 else snare, 90) for i in range(4)]
    return [(t, n, max(1, min(127, v + rng.randint(-10, 10)))) for t, n, v in hits]


def drums(rng: random.Random, count: int, workdir: Path) -> list[Piece]:
    pieces: list[Piece] = []
    meters = list(METER_BEATS)
    per_meter = -(-count // len(meters))
    for mi, meter_name in enumerate(meters):
        low, high = (60, 120) if meter_name == "6/8" else (60, 180)
        for i, grid_bpm in enumerate(np.linspace(low, high, per_meter)):
            if len(pieces) >= count:
                break
            bpm = round(float(grid_bpm) + rng.uniform(-2, 2), 1)
            beat_q = 1.5 if meter_name == "6/8" else 1.0
            seconds = 24.0
            bars = int(seconds * bpm / 60 / METER_BEATS[meter_name]) + 2
            events: list[tuple[float, bytes]] = []
            for b in range(bars):
                origin = b * METER_BEATS[meter_name]
                for t, n, v in drum_bar(meter_name, rng, fill=b % 8 == 7):
                    note(events, 9, (origin + t) * beat_q, 0.1, n, v)
                if b % 8 == 0:
                    note(events, 9, origin * beat_q, 0.5, 49, 90)
            soundfont = SOUNDFONTS[(mi + i) % len(SOUNDFONTS)]
            name = f"drums/{meter_name.replace('/', '-')}_{i:02d}.wav"
            duration = _render_piece(events, bpm * beat_q, soundfont, OUT / name, seconds, workdir)
            pieces.append(
                Piece(
                    name,
                    "drums",
                    "",
                    "",
                    bpm,
                    meter_name,
                    "GM drum kit, channel 10",
                    soundfont.name,
                    "drums",
                    duration,
                )
            )
    return pieces


TIMBRES = {
    # name: (partial amplitudes, decay time constant in beats, or None to sustain)
    "piano": ([1.0, 0.6, 0.35, 0.25, 0.15, 0.1, 0.06, 0.04], 0.6),
    "organ": ([1.0, 0.8, 0.0, 0.5, 0.0, 0.3, 0.0, 0.2], None),
    "saw": ([1.0 / k for k in range(1, 13)], 1.5),
}
MAJOR_PROGRESSIONS = ([0, 5, 7, 0], [0, 9, 5, 7], [0, 2, 7, 0])  # I IV V I, I vi IV V, I ii V I
MINOR_PROGRESSIONS = ([0, 5, 7, 0], [0, 8, 5, 7], [0, 3, 7, 0])  # i iv V i, i VI iv V, i III V i


def triad(root: int, quality: str) -> list[int]:
    return [root, root + (3 if quality == "min" else 4), root + 7]


def chord_quality(degree: int, mode: str) -> str:
    if mode == "major":
        return "min" if degree in (2, 4, 9) else "maj"
    return "maj" if degree in (3, 7, 8) else "min"  # harmonic minor: V is major


@functools.cache
def tone(freq: float, n: int, sr: int, timbre: str, decay: float | None) -> np.ndarray:
    partials = TIMBRES[timbre][0]
    t = np.arange(n) / sr
    y = np.zeros(n)
    for k, a in enumerate(partials, start=1):
        if a and k * freq < sr / 2 - 1000:
            y += a * np.sin(2 * np.pi * k * freq * t)
    env = np.minimum(1.0, t / 0.01)
    env *= np.exp(-t / decay) if decay else np.minimum(1.0, (n / sr - t) / 0.05)
    return y * env


def synth(rng: random.Random, workdir: Path) -> list[Piece]:
    pieces: list[Piece] = []
    timbres = list(TIMBRES)
    for mode in ("major", "minor"):
        for tonic in range(12):
            for j in range(2):
                timbre = timbres[(tonic + j + (mode == "minor")) % len(timbres)]
                decay_beats = TIMBRES[timbre][1]
                tone.cache_clear()  # tones repeat within a piece, not across pieces
                bpm = round(rng.uniform(70, 150), 1)
                meter_name = rng.choice(("3/4", "4/4"))
                beats = METER_BEATS[meter_name]
                beat_s = 60 / bpm
                seconds = 24.0
                progressions = MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS
                progression = progressions[(tonic + j) % len(progressions)]
                y = np.zeros(int((seconds + 2 * beats * beat_s) * SR))
                bar = 0
                while bar * beats * beat_s < seconds:
                    degree = progression[bar % len(progression)]
                    root = 48 + (tonic + degree) % 12  # C3..B3
                    pitches = [p + 12 for p in triad(root, chord_quality(degree, mode))]
                    for b in range(beats):
                        start = int((bar * beats + b) * beat_s * SR)
                        n = int(beat_s * SR)
                        decay = decay_beats * beat_s if decay_beats else None
                        accent = 1.0 if b == 0 else 0.6
                        if b == 0:
                            f0 = 440.0 * 2 ** ((root - 12 - 69) / 12)
                            y[start : start + n * beats] += 0.8 * tone(
                                f0, n * beats, SR, timbre, decay
                            )
                        for p in pitches:
                            f = 440.0 * 2 ** ((p - 69) / 12)
                            y[start : start + n] += accent * 0.5 * tone(f, n, SR, timbre, decay)
                    bar += 1
                y = y[: int(seconds * SR)]
                y += np.random.default_rng(len(pieces)).normal(0, 0.002, len(y))
                y *= 0.9 / np.max(np.abs(y))
                name = f"synth/{PITCH_CLASSES[tonic].replace('#', 's')}_{mode}_{j}.wav"
                (OUT / name).parent.mkdir(parents=True, exist_ok=True)
                sf.write(OUT / name, y.astype(np.float32), SR, subtype="PCM_16")
                pieces.append(
                    Piece(
                        name,
                        "synth",
                        PITCH_CLASSES[tonic],
                        mode,
                        bpm,
                        meter_name,
                        "additive synthesis, " + "-".join(map(str, progression)),
                        "",
                        timbre,
                        seconds,
                    )
                )
    return pieces


def _render_piece(
    events: list, quarter_bpm: float, soundfont: Path, wav: Path, seconds: float, workdir: Path
) -> float:
    wav.parent.mkdir(parents=True, exist_ok=True)
    midi = workdir / (wav.stem + ".mid")
    write_midi(midi, events, quarter_bpm)
    return render(midi, wav, soundfont, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chorales", type=int, default=50)
    parser.add_argument("--folk", type=int, default=50)
    parser.add_argument("--drums", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        ensure_apt()
        ensure_eval_extra(("music21",))
        missing = [str(s) for s in SOUNDFONTS if not s.exists()]
        if missing or not shutil.which("fluidsynth"):
            raise EvalSetError(f"fluidsynth or soundfonts missing: {missing}")
    except (EvalSetError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    started = time.monotonic()
    rng = random.Random(SEED)
    pieces: list[Piece] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, build in (
            ("synth", lambda: synth(rng, work)),
            ("drums", lambda: drums(rng, args.drums, work)),
            ("chorales", lambda: chorales(rng, args.chorales, work)),
            ("folk", lambda: folk(rng, args.folk, work)),
        ):
            made = build()
            log(f"{label}: {len(made)} pieces ({time.monotonic() - started:.0f} s)")
            pieces += made
    with open(OUT / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(pieces[0])))
        writer.writeheader()
        for piece in pieces:
            writer.writerow(asdict(piece))
    log(f"{len(pieces)} pieces in {OUT / 'manifest.csv'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
