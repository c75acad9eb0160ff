"""Signals that sit clearly at one end of a perceptual score, built from their definition.

Each generator returns mono float32 at ``sr`` and is seeded, so a test's known answer holds
by construction: a drum groove has a steady pulse and a pad has none; a plucked string decays
freely and a clipped sawtooth is distortion by definition; a live take is the dry take plus a
room (reverb) and an audience (claps and murmur).
"""

from __future__ import annotations

import numpy as np
import scipy.signal

SR = 22050


def _db(level_db: float) -> float:
    return float(10.0 ** (level_db / 20.0))


def _normalise(y: np.ndarray, peak_db: float) -> np.ndarray:
    return (y / np.max(np.abs(y)) * _db(peak_db)).astype(np.float32)


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.15 * sr)) / sr
    # A pitch drop from 120 to 50 Hz, as a drum machine's kick.
    phase = 2 * np.pi * (50 * t + 70 * (1 - np.exp(-t * 30)) / 30)
    return np.sin(phase) * np.exp(-t * 25)


def _noise_hit(sr: int, rng: np.random.Generator, seconds: float, decay: float) -> np.ndarray:
    n = int(seconds * sr)
    return rng.standard_normal(n) * np.exp(-np.arange(n) / sr * decay)


def drum_groove(
    seconds: float = 20.0, bpm: float = 120.0, sr: int = SR, seed: int = 1
) -> np.ndarray:
    """Kick on every beat, snare on 2 and 4, closed hat on every eighth: a steady groove."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sr))
    beat = 60.0 / bpm
    kick, snare = _kick(sr), 0.6 * _noise_hit(sr, rng, 0.12, 30)
    hat = 0.25 * np.diff(_noise_hit(sr, rng, 0.04, 120), prepend=0.0)
    for i, t in enumerate(np.arange(0.0, seconds, beat / 2)):
        a = int(t * sr)
        parts = [hat] + ([kick] if i % 2 == 0 else []) + ([snare] if i % 4 == 2 else [])
        for part in parts:
            n = min(part.size, y.size - a)
            y[a : a + n] += part[:n]
    return _normalise(y, -3.0)


def cymbal_groove(
    seconds: float = 20.0, bpm: float = 120.0, sr: int = SR, seed: int = 7
) -> np.ndarray:
    """The groove under a ride cymbal struck every eighth and ringing on: broadband noise as
    uneven as applause, but on the beat."""
    rng = np.random.default_rng(seed)
    y = drum_groove(seconds, bpm, sr, seed).astype(np.float64)
    ride = np.zeros_like(y)
    for t in np.arange(0.0, seconds, 30.0 / bpm):
        hit = np.diff(_noise_hit(sr, rng, 0.6, 6.0), prepend=0.0) * rng.uniform(0.6, 1.0)
        a = int(t * sr)
        n = min(hit.size, y.size - a)
        ride[a : a + n] += hit[:n]
    return _normalise(y / np.max(np.abs(y)) + 2.0 * ride / np.max(np.abs(ride)), -3.0)


def pad(seconds: float = 20.0, sr: int = SR, seed: int = 2) -> np.ndarray:
    """A sustained chord with slow, irregular swells and no attacks: no pulse to dance to."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for hz in (220.0, 261.63, 329.63, 392.0):
        for detune in (-0.3, 0.0, 0.3):
            y += np.sin(2 * np.pi * (hz + detune) * t + rng.uniform(0, 2 * np.pi))
    # Swells: smoothed noise, seconds long, never periodic.
    swell = scipy.signal.sosfiltfilt(
        scipy.signal.butter(2, 0.3, fs=sr, output="sos"), rng.standard_normal(t.size)
    )
    swell = 0.55 + 0.45 * swell / np.max(np.abs(swell))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 2.0)
    return _normalise(y * swell * fade, -6.0)


def plucked(
    seconds: float = 20.0, sr: int = SR, seed: int = 3, peak_db: float = -3.0
) -> np.ndarray:
    """A solo plucked string (Karplus-Strong): free decays, a dark spectrum, wide dynamics."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sr))
    notes = [196.0, 246.94, 293.66, 392.0, 329.63, 293.66, 246.94, 220.0]
    t, i = 0.3, 0
    while t < seconds - 1.0:
        hz = notes[i % len(notes)]
        period = round(sr / hz)
        n = min(int(2.5 * sr), y.size - int(t * sr))
        # The string: a delay line of one period whose feedback averages two taps (the
        # loss filter), excited by a period of noise.
        feedback = np.zeros(period + 2)
        feedback[0], feedback[period], feedback[period + 1] = 1.0, -0.498, -0.498
        burst = np.zeros(n)
        burst[:period] = rng.uniform(-1, 1, period)
        out = scipy.signal.lfilter([1.0], feedback, burst)
        a = int(t * sr)
        y[a : a + n] += out * rng.uniform(0.5, 1.0)
        t += rng.uniform(0.4, 1.1)
        i += 1
    return _normalise(y, peak_db)


def distorted_synth(seconds: float = 20.0, sr: int = SR) -> np.ndarray:
    """Sawtooth power chords over a sub-bass sine, driven hard into a clipper: held notes,
    no dynamics, a bright dense spectrum."""
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    roots = [110.0, 98.0, 130.81, 87.31]
    which = (t // 2.0).astype(int) % len(roots)
    root = np.asarray(roots)[which]
    phase = np.cumsum(root) / sr
    for ratio in (1.0, 1.5, 2.0):
        y += 2.0 * ((phase * ratio) % 1.0) - 1.0
    y += 1.5 * np.sin(2 * np.pi * np.cumsum(root / 2) / sr)
    y = np.tanh(6.0 * y)
    return np.clip(y * 1.2, -1.0, 1.0).astype(np.float32)


def noise_rock(seconds: float = 20.0, sr: int = SR, seed: int = 4) -> np.ndarray:
    """Loud and dense: a distorted chord wall, a sixteenth-note groove and noise, at the rails."""
    rng = np.random.default_rng(seed)
    drums = drum_groove(seconds, bpm=160.0, sr=sr, seed=seed).astype(np.float64)
    wall = distorted_synth(seconds, sr).astype(np.float64)
    noise = scipy.signal.sosfilt(
        scipy.signal.butter(2, 1000.0, "highpass", fs=sr, output="sos"),
        rng.standard_normal(wall.size),
    )
    y = np.tanh(2.0 * (0.6 * wall + 0.9 * drums + 0.3 * noise))
    return _normalise(y, -0.1)


def quiet_sparse(seconds: float = 20.0, sr: int = SR, seed: int = 5) -> np.ndarray:
    """A few soft plucks far apart, with silence between them, at a low level."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sr))
    one = plucked(3.0, sr, seed=seed).astype(np.float64)
    for t in np.arange(0.5, seconds - 3.0, 4.0) + rng.uniform(0, 0.5):
        a = int(t * sr)
        y[a : a + one.size] += one[: y.size - a]
    return _normalise(y, -30.0)


def live(dry: np.ndarray, sr: int = SR, seed: int = 6) -> np.ndarray:
    """``dry`` in a hall before an audience: a 1.8 s reverb, crowd murmur and applause."""
    rng = np.random.default_rng(seed)
    n_ir = int(1.8 * sr)
    ir = rng.standard_normal(n_ir) * np.exp(-np.arange(n_ir) / sr * 6.9 / 1.8)
    ir[0] = 8.0
    wet = scipy.signal.fftconvolve(dry.astype(np.float64), ir)[: dry.size]
    wet /= np.max(np.abs(wet))
    # Murmur: band-limited noise under everything; applause: many claps, dense at the ends.
    murmur = scipy.signal.sosfilt(
        scipy.signal.butter(2, [300.0, 3000.0], "bandpass", fs=sr, output="sos"),
        rng.standard_normal(dry.size),
    )
    murmur *= 0.05 / np.std(murmur)
    claps = np.zeros(dry.size)
    clap = np.diff(_noise_hit(sr, rng, 0.02, 200), prepend=0.0)
    seconds = dry.size / sr
    for _ in range(int(60 * seconds)):
        t = rng.uniform(0, seconds)
        # Applause swells at the start and end, thins out while the music plays.
        edge = min(t, seconds - t)
        if edge > 3.0 and rng.uniform() > 0.15:
            continue
        a = int(t * sr)
        n = min(clap.size, dry.size - a)
        claps[a : a + n] += clap[:n] * rng.uniform(0.2, 0.6)
    return _normalise(wet + murmur + claps, -1.0)
