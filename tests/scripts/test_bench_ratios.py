"""scripts/bench_pipelines.py's ratios: each round's earshot run against the seed's run of the
same round, and the figures bench_goals.py reports are their median.

The expected ratios are worked out by hand from the jobs/s below.
"""

from __future__ import annotations

import statistics

from scripts.bench_pipelines import ratios_to_seed


def _run(pipeline: str, round_: int, jobs_per_s: float, uploaders: int = 1) -> dict:
    return {
        "pipeline": pipeline,
        "clip_s": 5,
        "uploaders": uploaders,
        "round": round_,
        "jobs_per_s": jobs_per_s,
    }


def test_each_round_is_taken_against_the_seed_of_that_round():
    runs = [
        _run("seed tutorial", 0, 10.0),
        _run("earshot dev", 0, 25.0),
        _run("seed tutorial", 1, 20.0),
        _run("earshot dev", 1, 30.0),
        _run("seed tutorial", 2, 8.0),
        _run("earshot dev", 2, 16.0),
        _run("seed tutorial", 0, 5.0, uploaders=4),
        _run("earshot dev", 0, 12.0, uploaders=4),
    ]
    ratios = ratios_to_seed(runs)
    assert ratios == {(5, 1, "earshot dev"): [2.5, 1.5, 2.0], (5, 4, "earshot dev"): [2.4]}
    # Pooled over the rounds the ratio would be 71/38 = 1.87; the median of rounds is 2.0.
    assert statistics.median(ratios[(5, 1, "earshot dev")]) == 2.0


def test_a_round_without_its_seed_run_gives_no_ratio():
    assert ratios_to_seed([_run("earshot dev", 0, 25.0), _run("seed tutorial", 1, 10.0)]) == {}
