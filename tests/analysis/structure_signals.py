"""Signals whose structure is known by construction: bars, pieces, notes and fades."""

from __future__ import annotations

import numpy as np

SR = 22050


def tone(hz: float, seconds: float, *, sr: int = SR, decay_s: float = 0.3) -> np.ndarray:
    """A plucked note: four harmonics (1, 1/2, 1/3, 1/4) under an exponential decay."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * hz * h * t) / h for h in range(1, 5))
    return np.asarray(y * np.exp(-t / decay_s), dtype=np.float64)


def click_track(
    beats_per_bar: int,
    *,
    bpm: float = 120.0,
    seconds: float = 16.0,
    sr: int = SR,
    gains: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks on every beat, the downbeat's louder and an octave lower, as a metronome does.

    ``gains`` sets each position's click amplitude (default 0.8 for the downbeat, 0.25 for
    the others).

    Returns
    -------
    y : np.ndarray, float32
    downbeats_s : np.ndarray
        The constructed downbeat times.
    """
    y = np.zeros(int(seconds * sr))
    period = 60.0 / bpm
    times = np.arange(0.5, seconds - 0.2, period)
    for i, t in enumerate(times):
        down = i % beats_per_bar == 0
        click = tone(880.0 if down else 1760.0, 0.08, sr=sr, decay_s=0.02)
        start = round(t * sr)
        n = min(click.size, y.size - start)
        gain = gains[i % beats_per_bar] if gains else (0.8 if down else 0.25)
        y[start : start + n] += gain * click[:n]
    return y.astype(np.float32), times[::beats_per_bar]


def piece(
    *, root_hz: float, minor: bool, bpm: float, seconds: float, timbre: str, seed: int, sr: int = SR
) -> np.ndarray:
    """A few seconds of music: a chord per bar over a i-iv-v-i progression, a bass note and
    a kick on each beat. ``timbre`` is "pluck" (decaying harmonics), "organ" (sustained
    odd harmonics) or "noisy" (a band of noise around each chord note)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    y = np.zeros(n)
    period = 60.0 / bpm
    third = 3 if minor else 4
    degrees = [0, 5, 7, 0]
    bar = 4 * period
    for b, start_s in enumerate(np.arange(0.0, seconds, bar)):
        root = root_hz * 2 ** (degrees[b % 4] / 12)
        length = min(bar, seconds - start_s)
        m = int(length * sr)
        t = np.arange(m) / sr
        chord = np.zeros(m)
        for semis in (0, third, 7):
            hz = root * 2 ** (semis / 12)
            if timbre == "pluck":
                chord += tone(hz, length, sr=sr, decay_s=0.6)[:m]
            elif timbre == "organ":
                chord += sum(np.sin(2 * np.pi * hz * h * t) / h for h in (1, 3, 5, 7))
            else:
                noise = rng.standard_normal(m)
                spectrum = np.fft.rfft(noise)
                f = np.fft.rfftfreq(m, 1 / sr)
                spectrum *= np.exp(-0.5 * ((f - hz) / 15.0) ** 2)
                band = np.fft.irfft(spectrum, m)
                chord += band / (np.std(band) + 1e-9) * 0.5
        a = int(start_s * sr)
        y[a : a + m] += 0.15 * chord
        for k in range(4):
            s = a + int(k * period * sr)
            if s >= n:
                break
            kick = tone(root / 2, 0.25, sr=sr, decay_s=0.08)
            e = min(n, s + kick.size)
            y[s:e] += 0.4 * kick[: e - s]
    return y


def medley(seconds: float = 25.0, sr: int = SR) -> tuple[np.ndarray, list[float]]:
    """Three pieces of ``seconds`` each, back to back: C major plucked at 96 BPM, F# minor on
    an organ at 132 BPM, A flat major in noise bands at 110 BPM. Returns the joins too."""
    parts = [
        piece(root_hz=261.63, minor=False, bpm=96, seconds=seconds, timbre="pluck", seed=1, sr=sr),
        piece(root_hz=185.0, minor=True, bpm=132, seconds=seconds, timbre="organ", seed=2, sr=sr),
        piece(root_hz=207.65, minor=False, bpm=110, seconds=seconds, timbre="noisy", seed=3, sr=sr),
    ]
    y = np.concatenate(parts)
    y = 0.5 * y / np.max(np.abs(y))
    return y.astype(np.float32), [seconds, 2 * seconds]


def notes(
    pitch_classes: list[int], *, note_s: float = 0.4, lead_s: float = 0.3, sr: int = SR
) -> tuple[np.ndarray, np.ndarray]:
    """One plucked note per pitch class (octave 4), ``note_s`` apart after ``lead_s`` of
    silence. Returns the signal and the note start times."""
    starts = lead_s + note_s * np.arange(len(pitch_classes))
    y = np.zeros(int((starts[-1] + note_s + 0.5) * sr))
    for pc, t in zip(pitch_classes, starts, strict=True):
        hz = 261.63 * 2 ** (pc / 12)
        note = tone(hz, note_s, sr=sr, decay_s=0.15)
        note[-256:] *= np.linspace(1.0, 0.0, 256)  # a release, not a click
        a = round(t * sr)
        y[a : a + note.size] += 0.4 * note
    return y.astype(np.float32), starts


def faded(*, seconds: float, fade_in_s: float, fade_out_s: float, sr: int = SR) -> np.ndarray:
    """A steady chord with plucks every half second, faded in and out linearly in amplitude
    (``fade_in_s`` from the start, ``fade_out_s`` before the end; 0 for no fade)."""
    y = piece(root_hz=220.0, minor=False, bpm=120, seconds=seconds, timbre="organ", seed=4, sr=sr)
    gain = np.ones(y.size)
    n_in, n_out = int(fade_in_s * sr), int(fade_out_s * sr)
    if n_in:
        gain[:n_in] = np.linspace(0.0, 1.0, n_in)
    if n_out:
        gain[-n_out:] = np.linspace(1.0, 0.0, n_out)
    y = y * gain
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)
