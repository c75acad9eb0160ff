"""The app as a whole: problem documents everywhere, probes, OpenAPI, and no librosa."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from core import workers
from core.names import PROFILES, Queue
from tests.api.conftest import runtime_of
from tests.api.test_analyses import assert_problem

REPO = Path(__file__).resolve().parents[2]


def test_unknown_route_and_wrong_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/nowhere"), 404, "not_found")
    r = client.put("/v1/analyses")
    assert_problem(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]


def test_every_error_echoes_the_request_id(client: TestClient) -> None:
    r = client.get("/nowhere", headers={"X-Request-ID": "trace-1"})
    assert r.headers["x-request-id"] == "trace-1"
    assert r.json()["request_id"] == "trace-1"


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_when_everything_answers(client: TestClient) -> None:
    settings = runtime_of(client).settings
    # What each pool of `earshot dev` records once it consumes (earshot/service_cmd.py).
    for queue in Queue:
        workers.announce(settings, f"{queue.value}.1@host", [queue.value])
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["checks"] == {"broker": True, "database": True, "blobs": True}
    assert body["workers"] == {q.value: True for q in Queue}
    assert body["analyzer_version"]


def test_readyz_is_503_while_a_queue_has_no_warm_worker(client: TestClient) -> None:
    settings = runtime_of(client).settings
    workers.announce(settings, "interactive.1@host", [Queue.INTERACTIVE.value, Queue.BATCH.value])
    r = client.get("/readyz")
    body = assert_problem(r, 503, "not_ready")
    assert body["checks"] == {"broker": True, "database": True, "blobs": True}
    assert body["workers"] == {
        Queue.INTERACTIVE.value: True,
        Queue.BATCH.value: True,
        Queue.RENDER.value: False,
        Queue.WEBHOOK.value: False,
    }
    assert "workers starting" in body["detail"]
    assert Queue.RENDER.value in body["detail"] and Queue.BATCH.value not in body["detail"]


def test_readyz_is_503_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient],
) -> None:
    # Nothing listens on port 1: a real, refused connection.
    client = make_client(database_url="postgresql+psycopg://earshot@127.0.0.1:1/earshot")
    r = client.get("/readyz")
    body = assert_problem(r, 503, "not_ready")
    assert body["checks"]["database"] is False
    assert body["checks"]["blobs"] is True
    assert "database" in body["detail"]
    assert r.headers["retry-after"]


def test_app_never_imports_librosa_or_numpy(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from api.app import create_app\n"
        "from core.settings import Settings\n"
        f"create_app(Settings(data_dir={str(tmp_path)!r}))\n"
        "print(sorted(m for m in ('librosa', 'numpy', 'numba', 'scipy') if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'analysis'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    heavy, analysis = (json.loads(line.replace("'", '"')) for line in out.stdout.split("\n")[:2])
    assert heavy == []
    # Only the analysis package's light leaves: its profile names, version string, errors,
    # the result document's types (for the OpenAPI schema) and the Spotify-shaped views with
    # the score methods they quote (built on request).
    light = {"analysis", "analysis.profiles", "analysis.version", "analysis.errors"}
    views = {"analysis.views", "analysis.score_methods"}
    assert set(analysis) <= light | {"analysis.schema"} | views
    assert "analysis.schema" in analysis


def test_the_api_offers_every_analysis_profile(client: TestClient) -> None:
    from analysis.analyze import analyze_file

    # The profiles the upload form documents are the ones the analysis runs (analyze_file
    # refuses any other name).
    doc = client.get("/openapi.json").json()
    text = json.dumps(doc)
    assert set(PROFILES) == {"standard", "fast"}
    for name in PROFILES:
        assert f"`{name}`" in text or f'"{name}"' in text
    assert "profile" in analyze_file.__code__.co_varnames


def test_openapi_documents_every_route_and_error(client: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").json()
    validate(doc)
    assert client.get("/docs").status_code == 200
    operations = [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "delete")
    ]
    assert {(p, m) for p, m, _ in operations} >= {
        ("/v1/analyses", "post"),
        ("/v1/analyses", "get"),
        ("/v1/analyses/{job_id}", "get"),
        ("/v1/analyses/{job_id}", "delete"),
        ("/v1/analyses/{job_id}/result", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    }
    for path, method, op in operations:
        assert op.get("description") and op.get("summary"), (path, method)
        assert op.get("tags"), (path, method)
        errors = {s: r for s, r in op["responses"].items() if s.startswith(("4", "5"))}
        if path != "/healthz":
            assert errors, (path, method)
        for status, response in errors.items():
            content = response["content"]["application/problem+json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}
            for example in content["examples"].values():
                assert example["value"]["status"] == int(status)
    post = doc["paths"]["/v1/analyses"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["profile"]["enum"] == list(PROFILES)
    assert {"413", "415", "422", "503"} <= set(post["responses"])
    assert "Problem" in doc["components"]["schemas"]
