"""Schemathesis against the app's own OpenAPI document with every check it has (the Python
side of `st run --checks all`): no server error, no answer the document does not declare (status,
content type, headers, body schema), schema-invalid requests refused, schema-valid ones accepted,
no 2xx without the key, no deleted job still served.

The app runs on a real embedded runtime (SQLite, local blobs, filesystem:// broker) under a
temporary folder, with API keys and a real job in the store, so generated ids, cursors, headers
and multipart bodies meet real state. A stateful run follows the document's links from a
submitted job to its other operations. The checks' settings come from the repository's
schemathesis.toml, as for `st run`. Bounded and derandomized: the same examples every run, at
most MAX_EXAMPLES per operation and STATEFUL_EXAMPLES scenarios of STATEFUL_STEPS calls.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Case, Response
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from core.settings import Settings
from tasks.analyze import run_analysis
from tests.api.conftest import announce_warm_workers, wav_bytes

MAX_EXAMPLES = 25
# 15 scenarios reached every job operation alone, but twice in full loaded runs one link
# (waveform.json) was never followed; 30 leave a margin for ~5 s more.
STATEFUL_EXAMPLES = 30
STATEFUL_STEPS = 8
KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = Path(__file__).resolve().parents[2]
SUBMIT = "POST /v1/analyses"


# The schema is loaded at import (schemathesis parametrizes at collection time, and its lazy
# fixture loader does not support pytest 9), so the app and its data folder are made here and
# removed by the module fixture below.
DATA_DIR = Path(tempfile.mkdtemp(prefix="earshot-fuzz-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)  # also when the tests are deselected
# status_wait_max_s: a generated `wait` on a queued job (no worker runs here) answers at once.
APP = create_app(Settings(data_dir=DATA_DIR / "var", api_keys=KEY, status_wait_max_s=0.05))
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", APP, config=SchemathesisConfig.from_path(str(ROOT / "schemathesis.toml"))
)


@pytest.fixture(scope="module", autouse=True)
def running_app() -> Iterator[None]:
    with TestClient(APP) as client:
        announce_warm_workers(APP.state.runtime.settings)
        # One finished job, so result and cancel paths have something real to find.
        r = client.post(
            "/v1/analyses",
            files={"file": ("a.wav", wav_bytes(), "audio/wav")},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 202, r.text
        # Analysed by the real task, so its result is a real document (the schema types it).
        status = run_analysis(APP.state.runtime, r.json()["id"], retry=_no_retry)
        assert status == "succeeded"
        yield


def _no_retry(exc: Exception) -> None:
    raise AssertionError(f"the fixture's job must analyse at the first attempt: {exc!r}")


def keep_local(case: Case) -> None:
    """Point a generated callback_url at 127.0.0.1: its host is resolved at submit time, and a
    test sends nothing beyond this machine (a loopback callback is refused, 422
    invalid_callback_url, a documented answer)."""
    if case.operation.label != SUBMIT or not isinstance(case.body, dict):
        return
    url = case.body.get("callback_url")
    if not isinstance(url, str):
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return  # e.g. "http://[": the service cannot parse it either and refuses it unresolved
    if parts.netloc:
        case.body["callback_url"] = urlunsplit(parts._replace(netloc="127.0.0.1:9"))


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@schema.parametrize()
@FUZZ_SETTINGS
def test_with_a_key_every_check_holds(case: Case) -> None:
    keep_local(case)
    case.call_and_validate(headers=AUTH)


@schema.parametrize()
@FUZZ_SETTINGS
def test_without_a_key_every_check_holds(case: Case) -> None:
    # Health probes answer; everything else is a documented 401 problem.
    keep_local(case)
    case.call_and_validate()


# The stateful run has an app of its own and a fresh API key per scenario: a key sees only its
# own jobs, so every scenario starts from nothing (Hypothesis replays scenarios and needs the
# same answers to the same calls; the jobs, idempotency keys and per-key job limit of earlier
# scenarios would change them).
STATEFUL_KEYS = [f"fuzz-stateful-{i:04d}-0123456789" for i in range(1000)]
STATEFUL_APP = create_app(
    Settings(
        data_dir=DATA_DIR / "stateful", api_keys=",".join(STATEFUL_KEYS), status_wait_max_s=0.05
    )
)
stateful_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    STATEFUL_APP,
    config=SchemathesisConfig.from_path(str(ROOT / "schemathesis.toml")),
)
SCENARIO_KEYS = itertools.cycle(STATEFUL_KEYS)
SEEDS = itertools.count(1000)
# (operation, status) of every stateful call, to show the links led somewhere.
STATEFUL_ANSWERS: Counter[tuple[str, int]] = Counter()


class Workflow(stateful_schema.as_state_machine()):  # type: ignore[misc]
    """Submit real audio, then follow the links of the answer (get, result, events, plots,
    cancel) with the job's id, checking every answer as above."""

    def setup(self) -> None:
        self.auth = {"Authorization": f"Bearer {next(SCENARIO_KEYS)}"}

    def before_call(self, case: Case) -> None:
        keep_local(case)
        positive = case.meta is not None and case.meta.generation.mode.is_positive
        if case.operation.label == SUBMIT and positive and isinstance(case.body, dict):
            # Generated bytes are almost never audio (415): a real WAV makes a job to follow. A
            # negative case keeps its bytes, which may be what makes it invalid.
            case.body["file"] = wav_bytes(seed=next(SEEDS))

    def get_call_kwargs(self, case: Case) -> dict[str, Any]:
        return {"headers": self.auth}

    def after_call(self, response: Response, case: Case) -> None:
        super().after_call(response, case)
        STATEFUL_ANSWERS[(case.operation.label, response.status_code)] += 1


def test_stateful_links_from_a_submit_reach_the_job_and_every_check_holds() -> None:
    STATEFUL_ANSWERS.clear()
    Workflow.run(
        settings=settings(
            FUZZ_SETTINGS,
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
        )
    )
    reached = {operation for (operation, status), _ in STATEFUL_ANSWERS.items() if status != 404}
    # Through the links, each operation of a submitted job found it (200, or 409 while it is
    # queued), not only the 404 of a made-up id.
    job_operations = {
        f"{method} /v1/analyses/{{job_id}}{tail}"
        for method, tail in [
            ("GET", ""),
            ("DELETE", ""),
            ("GET", "/result"),
            ("GET", "/events"),
            ("GET", "/waveform.json"),
            ("GET", "/spectrogram.png"),
        ]
    }
    assert job_operations <= reached, STATEFUL_ANSWERS
