"""What the analysis now computes in fewer numpy calls (issue 15: a short file's fixed cost)
gives bit for bit what the straightforward arithmetic it replaced gave, so results stay the same
(analyzer_version): each case is checked against that arithmetic written out plainly here, or
against librosa's own function."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from analysis import sections
from analysis.tonal import estimate_tuning


def novelty_by_loops(x: np.ndarray, w: int) -> np.ndarray:
    """The section novelty curve as it was written before: one ``+=`` per pair of units."""
    n = x.shape[0]
    padded = np.concatenate([np.repeat(x[:1], w, axis=0), x, np.repeat(x[-1:], w, axis=0)])
    band = [np.zeros(padded.shape[0])] + [
        np.linalg.norm(padded[k:] - padded[:-k], axis=1) for k in range(1, 2 * w)
    ]
    idx = np.arange(n) + w
    cross = np.zeros(n)
    within = np.zeros(n)
    for a in range(-w, 0):
        for b in range(w):
            cross += band[b - a][idx + a]
    for a in range(-w, 0):
        for a2 in range(a + 1, 0):
            within += band[a2 - a][idx + a]
            within += band[a2 - a][idx + a + w]
    pairs = w * (w - 1) / 2
    return 2.0 * cross / (w * w) - within / pairs


@pytest.mark.parametrize(
    ("n", "w", "gather"),
    [
        (8, 4, None),
        (37, 4, None),
        (120, 16, None),
        (400, 32, None),
        # A long file's path: distances k by k and the units a block at a time.
        (300, 16, 4096),
        (1, 4, None),
    ],
)
def test_novelty_is_the_sum_of_its_pairs_in_order(
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    w: int,
    gather: int | None,
) -> None:
    if gather is not None:
        monkeypatch.setattr(sections, "_GATHER_ELEMENTS", gather)
    # Unit features spanning several orders of magnitude, where the order of additions shows.
    x = rng.standard_normal((n, 24)) * 10.0 ** rng.integers(-3, 4, (n, 1))
    ours = sections.novelty(x, w)
    plain = novelty_by_loops(x, w)
    assert ours.dtype == plain.dtype and np.array_equal(ours.view(np.uint64), plain.view(np.uint64))


def test_tuning_of_real_music_is_librosas(samples_dir: Path) -> None:
    """The stencil worked out at the spectral peaks alone (estimate_tuning) picks the same
    pitches as librosa's over the whole spectrum: the same tuning, to the last bit."""
    y, sr = librosa.load(samples_dir / "aminor_progression.wav", sr=22050, mono=True)
    S = np.abs(librosa.stft(y))
    for frames in (slice(0, 40), slice(0, None)):
        ours = estimate_tuning(S[:, frames], sr, 2048)
        assert ours == float(librosa.estimate_tuning(S=S[:, frames], sr=sr, n_fft=2048))


def test_periodicity_is_remembered_by_the_envelope_s_values(rng: np.random.Generator) -> None:
    """The file's tempo and a one-section file's section tempo ask for the periodicity of the
    same envelope: the second answer is the first, and an envelope that differs in one value
    (same length, same dtype) is never answered from it."""
    from analysis.rhythm import _periodicity, periodicity

    env = rng.random(400).astype(np.float32)
    first = periodicity(env, 43.07)
    again = periodicity(env.copy(), 43.07)
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert not any(a.flags.writeable for a in first)
    fresh = _periodicity.__wrapped__(env.tobytes(), env.dtype.str, 43.07)
    assert all(np.array_equal(a, b) for a, b in zip(first, fresh, strict=True))
    other = env.copy()
    other[200] += 1.0
    changed = periodicity(other, 43.07)
    expected = _periodicity.__wrapped__(other.tobytes(), other.dtype.str, 43.07)
    assert all(np.array_equal(a, b) for a, b in zip(changed, expected, strict=True))
    assert not np.array_equal(changed[0], first[0])
