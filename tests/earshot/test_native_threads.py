"""Every `earshot` process runs numpy's native thread pools with one thread unless the
operator set their variables: the pool processes are the parallelism.

Checked in a fresh interpreter (OpenBLAS reads its variable once, when numpy loads) through
``earshot.cli.main``, with the thread counts the loaded libraries themselves report
(threadpoolctl asks OpenBLAS / OpenMP at run time, not our variables).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from earshot.cli import NATIVE_THREAD_VARS

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from earshot.cli import main
try:
    main(["status", "--help"])
except SystemExit:
    pass
import numpy, scipy.linalg
from threadpoolctl import threadpool_info
print(json.dumps([(i["user_api"], i["internal_api"], i["num_threads"]) for i in threadpool_info()]))
"""


def _pools(**env: str) -> list[tuple[str, str, int]]:
    base = {k: v for k, v in os.environ.items() if k not in NATIVE_THREAD_VARS}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO,
    )
    return [tuple(row) for row in json.loads(done.stdout.strip().splitlines()[-1])]


def test_native_pools_get_one_thread_by_default() -> None:
    pools = _pools()
    assert any(api == "blas" for api, _, _ in pools), pools  # numpy's BLAS was seen at all
    assert all(threads == 1 for _, _, threads in pools), pools


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to ask for two threads")
def test_an_operators_choice_is_kept() -> None:
    pools = _pools(OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    blas = [threads for api, _, threads in pools if api == "blas"]
    assert blas and all(threads == 2 for threads in blas), pools
