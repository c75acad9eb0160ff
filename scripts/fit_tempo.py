"""Fit the weights of the tempo model (analysis/rhythm.py, step 2) on the dev half of the eval set.

For every dev piece of ``.eval/manifest.csv`` (scripts/make_eval_set.py) and both profiles, the
onset envelope and its low and high bands are computed as ``analyze_file`` computes them, the
candidates as ``analysis.rhythm.tempo_candidates`` makes them, and a conditional logit (the
softmax over one piece's candidates of a linear score) is fitted by maximum likelihood, with a
small L2 penalty, to say which candidate is the annotated beat (within ±4 %); ``W_TERNARY`` is
a fixed prior, not fitted (see analysis/rhythm.py). Prints the weights to paste into
analysis/rhythm.py and the Acc1 of the choice on the dev and test halves. The test half is
never used for fitting. Envelopes are cached in ``.eval/onset-envelopes.npz``.

Usage: ``python scripts/fit_tempo.py [--l2 0.001]``
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from eval_accuracy import EVAL, MANIFEST, split, tempo_acc  # noqa: E402

from analysis.decode import downmix, mono_resampler, open_audio  # noqa: E402
from analysis.features import FeatureExtractor  # noqa: E402
from analysis.limits import Limits  # noqa: E402
from analysis.profiles import PROFILES, get_profile  # noqa: E402
from analysis.rhythm import W_TERNARY, _onsets, tempo_candidates  # noqa: E402

CACHE = EVAL / "onset-envelopes.npz"
NAMES = ("W_PRIOR", "W_PRIOR2", "W_PERIODICITY", "W_DENSITY", "W_DENSITY2", "W_BACKBEAT")


def envelope(path: Path, profile: str) -> tuple[np.ndarray, np.ndarray]:
    """The onset envelope and its low and high bands (``analysis.features``)."""
    params = get_profile(profile)
    extractor = FeatureExtractor(
        params.sr, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels
    )
    with open_audio(path, limits=Limits()) as source:
        resample = mono_resampler(source.info.sample_rate, params.sr)
        for block in source.blocks():
            extractor.push(resample(downmix(block)))
        extractor.push(resample(None))
    features = extractor.finish()
    return features.series["onset_strength"], features.matrices["onset_bands"]


def envelopes(pieces: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """``{profile}:{file}``: the onset envelope; ``bands:{profile}:{file}``: its bands."""
    cached = dict(np.load(CACHE)) if CACHE.exists() else {}
    missing = [(p["file"], prof) for p in pieces for prof in PROFILES]
    missing = [(f, prof) for f, prof in missing if f"bands:{prof}:{f}" not in cached]
    for n, (file, prof) in enumerate(missing, start=1):
        cached[f"{prof}:{file}"], cached[f"bands:{prof}:{file}"] = envelope(EVAL / file, prof)
        if n % 50 == 0:
            print(f"  {n}/{len(missing)} envelopes", file=sys.stderr)
    if missing:
        np.savez_compressed(CACHE, **cached)
    return cached


def design(pieces, envs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per piece and profile: candidate features (rows; the last column is ``ternary``, whose
    weight is fixed) and which candidates are right."""
    xs, ys = [], []
    for p in pieces:
        for prof in PROFILES:
            params = get_profile(prof)
            env = envs[f"{prof}:{p['file']}"]
            onsets = _onsets(env, params.sr, params.hop_length)
            bands = envs[f"bands:{prof}:{p['file']}"]
            cands = tempo_candidates(env, params.sr / params.hop_length, onsets, bands)
            xs.append(
                np.array(
                    [
                        [
                            c.log_tempo,
                            c.log_tempo**2,
                            c.periodicity,
                            c.density,
                            c.density**2,
                            c.backbeat,
                            float(c.ternary),
                        ]
                        for c in cands
                    ]
                ).reshape(-1, len(NAMES) + 1)
            )
            ys.append(np.array([tempo_acc(float(p["bpm"]), c.bpm, (1.0,)) for c in cands]))
    return xs, ys


def scores(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The model's score of each candidate: fitted weights, plus the fixed ternary prior."""
    return x[:, :-1] @ w + W_TERNARY * x[:, -1]


def neg_log_likelihood(w, xs, ys, l2: float) -> float:
    total = 0.0
    for x, y in zip(xs, ys, strict=True):
        if not y.any():
            continue
        z = scores(w, x)
        z = z - z.max()
        total -= np.log(np.exp(z[y]).sum()) - np.log(np.exp(z).sum())
    return total / len(xs) + l2 * float(w @ w)


def accuracy(w, xs, ys) -> float:
    return float(
        np.mean(
            [y.size > 0 and y[int(np.argmax(scores(w, x)))] for x, y in zip(xs, ys, strict=True)]
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--l2", type=float, default=0.001, help="L2 penalty (default 0.001)")
    args = parser.parse_args(argv)
    with open(MANIFEST, newline="") as f:
        pieces = list(csv.DictReader(f))
    envs = envelopes(pieces)
    halves = {h: [p for p in pieces if split(p["file"]) == h] for h in ("dev", "test")}
    data = {h: design(ps, envs) for h, ps in halves.items()}
    fit = minimize(
        neg_log_likelihood, np.zeros(len(NAMES)), args=(*data["dev"], args.l2), method="L-BFGS-B"
    )
    for name, value in zip(NAMES, fit.x, strict=True):
        print(f"{name} = {value:.2f}")
    for half, (xs, ys) in data.items():
        print(
            f"{half}: Acc1 {accuracy(fit.x, xs, ys):.3f} of {len(xs)} piece-profiles, "
            f"a right candidate in {np.mean([y.any() for y in ys]):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
