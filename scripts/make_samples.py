"""Synthesize the sample clips in samples/ (known answers for tests and demos).

Every clip is made from sines and seeded noise, so the files are ours to give away (CC0) and
their tempo, key and pitch are known by construction. Run ``make samples`` to rewrite them;
the output is deterministic up to the encoders' own versions.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
A4 = 440.0
NOTES = {"C": -9, "C#": -8, "D": -7, "D#": -6, "E": -5, "F": -4, "F#": -3, "G": -2, "G#": -1,
         "A": 0, "A#": 1, "B": 2}  # fmt: skip


def note_hz(name: str, octave: int) -> float:
    return A4 * 2.0 ** (NOTES[name] / 12.0 + (octave - 4))


def tone(hz: float, n: int, sr: int) -> np.ndarray:
    """A plucked-ish note: four harmonics at 1/k amplitude under an exponential decay."""
    t = np.arange(n) / sr
    wave = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 5))
    return wave * np.exp(-1.5 * t)


def chords(progression: list[list[tuple[str, int]]], seconds: float, sr: int) -> np.ndarray:
    per = int(seconds * sr)
    out = np.zeros(per * len(progression))
    for i, chord in enumerate(progression):
        out[i * per : (i + 1) * per] = sum(tone(note_hz(n, o), per, sr) for n, o in chord)
    return out / np.max(np.abs(out))


def clicks(bpm: float, duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A drum pattern: a kick (decaying 60 Hz) on every beat, a noise hat between beats."""
    out = np.zeros(int(duration_s * sr))
    period = 60.0 / bpm
    kick_n = int(0.12 * sr)
    t = np.arange(kick_n) / sr
    kick = np.sin(2 * np.pi * 60 * t) * np.exp(-t * 30)
    hat_n = int(0.03 * sr)
    hat = rng.standard_normal(hat_n) * np.exp(-np.arange(hat_n) / sr * 150) * 0.4
    for beat in np.arange(0, duration_s, period):
        i = int(beat * sr)
        out[i : i + kick_n] += kick[: len(out) - i]
        j = int((beat + period / 2) * sr)
        if j < len(out):
            out[j : j + hat_n] += hat[: len(out) - j]
    return out


def click_c_major(sr: int) -> np.ndarray:
    """8 s at 120 BPM: kick and hats over C - F - G - C, two seconds (four beats) each."""
    rng = np.random.default_rng(20240601)
    prog = [
        [("C", 3), ("C", 4), ("E", 4), ("G", 4)],
        [("F", 3), ("F", 4), ("A", 4), ("C", 5)],
        [("G", 3), ("G", 4), ("B", 4), ("D", 5)],
        [("C", 3), ("C", 4), ("E", 4), ("G", 4)],
    ]
    return 0.45 * chords(prog, 2.0, sr) + 0.45 * clicks(120.0, 8.0, sr, rng)


def a_minor(sr: int) -> np.ndarray:
    """6 s of Am - Dm - E - Am, 1.5 s each, no drums."""
    prog = [
        [("A", 2), ("A", 3), ("C", 4), ("E", 4)],
        [("D", 3), ("D", 4), ("F", 4), ("A", 4)],
        [("E", 3), ("E", 4), ("G#", 4), ("B", 4)],
        [("A", 2), ("A", 3), ("C", 4), ("E", 4)],
    ]
    return 0.8 * chords(prog, 1.5, sr)


def sine_440(sr: int) -> np.ndarray:
    """5 s of a 440 Hz sine at half scale with 10 ms fades (no clicks at the ends)."""
    n = 5 * sr
    y = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n) / sr)
    fade = int(0.01 * sr)
    ramp = np.linspace(0.0, 1.0, fade)
    y[:fade] *= ramp
    y[-fade:] *= ramp[::-1]
    return y


CLIPS: dict[str, Callable[[int], np.ndarray]] = {
    "click120_cmajor": click_c_major,
    "aminor_progression": a_minor,
    "sine440": sine_440,
}


# A spoken known answer (speechiness): espeak-ng's default English voice reading SPEECH_TEXT.
SPEECH_CLIP = "speech_espeak.ogg"
SPEECH_TEXT = (
    "This is a spoken sentence, not music. "
    "The quick brown fox jumps over the lazy dog, and then it rests for a while."
)


def write_speech(out: Path) -> Path | None:
    """``SPEECH_CLIP``: espeak-ng's reading of ``SPEECH_TEXT`` (22.05 kHz mono Ogg Vorbis).

    Needs the espeak-ng program (Debian package espeak-ng); without it the committed clip is
    left as it is and None returned. Its output is not covered by espeak-ng's GPL (the
    program's licence does not extend to what it produces), so the clip is CC0 like the rest.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    wav = subprocess.run(
        [espeak, "--stdout", "-v", "en", SPEECH_TEXT], capture_output=True, check=True
    ).stdout
    y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    path = out / SPEECH_CLIP
    sf.write(path, y, sr, format="OGG", subtype="VORBIS", compression_level=0.6)
    return path


def write_aac(path: Path, y: np.ndarray, sr: int, bit_rate: int = 48000) -> None:
    """AAC in an MP4 (.m4a) container, encoded with FFmpeg through PyAV."""
    with av.open(str(path), mode="w", format="ipod") as container:
        stream = container.add_stream("aac", rate=sr, layout="mono")
        stream.bit_rate = bit_rate
        frame_size = 1024
        data = y.astype(np.float32)
        for pts in range(0, len(data), frame_size):
            chunk = data[pts : pts + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk[np.newaxis, :], format="fltp", layout="mono")
            frame.rate = sr
            frame.pts = pts
            frame.time_base = Fraction(1, sr)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_all(name: str, make: Callable[[int], np.ndarray], out: Path) -> list[Path]:
    # Rates differ per format on purpose: the decoder must resample each to 22050 Hz. WAV is
    # 16 kHz and FLAC 22.05 kHz (no resampling needed) to keep the committed files small.
    y16, y22, y441, y48 = make(16000), make(22050), make(44100), make(48000)
    paths = {
        "wav": out / f"{name}.wav",
        "flac": out / f"{name}.flac",
        "ogg": out / f"{name}.ogg",
        "opus": out / f"{name}.opus",
        "mp3": out / f"{name}.mp3",
        "m4a": out / f"{name}.m4a",
    }
    sf.write(paths["wav"], y16, 16000, subtype="PCM_16")
    sf.write(paths["flac"], y22, 22050, subtype="PCM_16")
    sf.write(paths["ogg"], y441, 44100, format="OGG", subtype="VORBIS", compression_level=0.9)
    sf.write(paths["opus"], y48, 48000, format="OGG", subtype="OPUS", compression_level=0.8)
    sf.write(
        paths["mp3"],
        y441,
        44100,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode="CONSTANT",
        compression_level=0.85,
    )
    write_aac(paths["m4a"], y441, 44100)
    return list(paths.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "samples", help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, make in CLIPS.items():
        for path in write_all(name, make, args.out):
            size = path.stat().st_size
            total += size
            print(f"{path.relative_to(args.out)}  {size / 1024:.0f} KiB")
    speech = write_speech(args.out)
    if speech is None:
        print(f"{SPEECH_CLIP}: espeak-ng not found, left as it is")
    else:
        total += speech.stat().st_size
        print(f"{speech.relative_to(args.out)}  {speech.stat().st_size / 1024:.0f} KiB")
    print(f"total {total / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
