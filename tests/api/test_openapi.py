"""The OpenAPI document as a client generator reads it: readable operation ids, and a result
schema that names every field docs/result.md documents and that real results satisfy.

The truths are outside the code under test: the field tables of docs/result.md, the documents
the real worker task stores for the files in samples/, and the `jsonschema` validator run on
the schema the app serves at /openapi.json.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core.names import PROFILES
from tasks.analyze import run_analysis
from tests.api.conftest import upload

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted(p for p in (REPO / "samples").iterdir() if p.suffix != ".md")
LOWER_CAMEL = re.compile(r"[a-z]+(?:[A-Z0-9][a-z0-9]*)*")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
RESULT = "/v1/analyses/{job_id}/result"
VIEWS = ("audio-features", "audio-analysis")


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_every_operation_has_a_unique_lower_camel_case_id(openapi: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(openapi)]
    assert len(ids) >= 10
    assert all(isinstance(i, str) and LOWER_CAMEL.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids
    by_route = {(m, p): op["operationId"] for p, m, op in operations(openapi)}
    assert by_route[("post", "/v1/analyses")] == "createAnalysis"
    assert by_route[("get", "/v1/analyses")] == "listAnalyses"
    assert by_route[("get", "/v1/analyses/{job_id}")] == "getAnalysis"
    assert by_route[("delete", "/v1/analyses/{job_id}")] == "cancelAnalysis"
    assert by_route[("get", RESULT)] == "getAnalysisResult"
    assert by_route[("get", "/healthz")] == "getHealth"
    assert by_route[("get", "/readyz")] == "getReadiness"


def test_links_lead_to_existing_operations(openapi: dict[str, Any]) -> None:
    ids = {op["operationId"]: path for path, _, op in operations(openapi)}
    submit = openapi["paths"]["/v1/analyses"]["post"]["responses"]
    for status in ("200", "202"):
        links = submit[status]["links"]
        assert len(links) == 9
        for link in links.values():
            # Every linked operation takes the job id the link fills in.
            assert "{job_id}" in ids[link["operationId"]], link
            assert link["parameters"] == {"job_id": "$response.body#/id"}


def validator(openapi: dict[str, Any], path: str = RESULT) -> Draft202012Validator:
    """A validator of what ``GET path`` answers (the result document by default) against the
    served schema, $refs resolved in it."""
    resource = Resource.from_contents(openapi, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource("urn:openapi", resource)
    json_schema = openapi["paths"][path]["get"]["responses"]["200"]["content"]
    ref = json_schema["application/json"]["schema"]["$ref"]
    return Draft202012Validator({"$ref": "urn:openapi" + ref}, registry=registry)


def resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = openapi
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def documented_fields() -> set[str]:
    """Dotted paths of every field in docs/result.md's `field` tables (`a.b`, `a.{x,y}`)."""
    prefixes = {"## Top level": "", "## `audio`": "audio.", "## `summary`": "summary."}
    prefixes["## `frames`"] = "frames."
    prefix: str | None = None
    in_field_table = False
    fields: set[str] = set()
    for line in (REPO / "docs" / "result.md").read_text().splitlines():
        if line.startswith("## "):
            prefix = prefixes.get(line.strip())
        if not line.startswith("|"):
            in_field_table = False
            continue
        first = line.split("|")[1].strip()
        if first == "field":
            in_field_table = True
            continue
        if not in_field_table or prefix is None or set(first) <= {"-"}:
            continue
        for name in re.findall(r"`([^`]+)`", first):
            stem, _, alternatives = name.partition("{")
            for tail in alternatives.rstrip("}").split(",") if alternatives else [""]:
                fields.add(prefix + stem + tail)
    return fields


def test_result_schema_names_every_documented_field(openapi: dict[str, Any]) -> None:
    fields = documented_fields()
    # The parse found the tables: a sample from each section.
    assert {"profile", "audio.sha256", "summary.tempo.bpm", "frames.count"} <= fields
    assert {"summary.spectral_centroid_hz.std", "summary.rms.mean", "summary.chroma.mean"} <= (
        fields
    )
    response = openapi["paths"][RESULT]["get"]["responses"]["200"]["content"]
    root = resolve(openapi, response["application/json"]["schema"])
    for field in sorted(fields):
        schema = root
        for part in field.split("."):
            assert part in schema.get("properties", {}), f"{field}: no {part!r} in the schema"
            schema = resolve(openapi, schema["properties"][part])
            assert schema.get("description"), f"{field}: no description"


def test_result_schema_has_no_open_objects(openapi: dict[str, Any]) -> None:
    """Every object in the result's schema lists its properties and allows no others."""
    response = openapi["paths"][RESULT]["get"]["responses"]["200"]["content"]
    pending = [response["application/json"]["schema"]]
    seen = 0
    while pending and seen < 200:
        seen += 1
        schema = resolve(openapi, pending.pop())
        if schema.get("type") == "object":
            assert schema.get("properties"), schema
            assert schema.get("additionalProperties") is False, schema
            assert set(schema["required"]) == set(schema["properties"]), schema
            pending.extend(schema["properties"].values())
        elif schema.get("type") == "array":
            pending.append(schema["items"])
    assert seen >= 40  # the walk went through the whole document (50 nodes today)


@pytest.mark.parametrize("profile", PROFILES)
def test_real_results_validate_against_the_served_schema(
    client: TestClient, openapi: dict[str, Any], profile: str
) -> None:
    check = validator(openapi)
    # The Spotify-shaped views of the same results (api/routes/views.py).
    views = {name: validator(openapi, f"/v1/analyses/{{job_id}}/{name}") for name in VIEWS}
    assert len(SAMPLES) >= 18
    for sample in SAMPLES:
        r = upload(client, sample.read_bytes(), filename=sample.name, profile=profile)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        run_analysis(client.app.state.runtime, job_id, retry=_no_retry)  # type: ignore[attr-defined]
        document = client.get(f"/v1/analyses/{job_id}/result").json()
        errors = [e.message for e in check.iter_errors(document)]
        assert errors == [], f"{sample.name} ({profile}): {errors}"
        assert document["profile"] == profile
        for name, view_check in views.items():
            view = client.get(f"/v1/analyses/{job_id}/{name}").json()
            errors = [e.message for e in view_check.iter_errors(view)]
            assert errors == [], f"{name} of {sample.name} ({profile}): {errors}"
    # The schema is strict enough to refuse what a real document is not.
    for broken in _broken(document):
        assert not check.is_valid(broken)
    features = client.get(f"/v1/analyses/{job_id}/audio-features").json()
    for field, wrong in (("key", 12), ("mode", -1), ("time_signature", 2), ("energy", 1.5)):
        assert not views["audio-features"].is_valid({**features, field: wrong}), field


def _broken(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    missing = copy.deepcopy(document)
    del missing["summary"]["tempo"]["bpm"]
    yield missing
    extra = copy.deepcopy(document)
    extra["audio"]["bitrate"] = 128
    yield extra
    wrong_type = copy.deepcopy(document)
    wrong_type["frames"]["count"] = "many"
    yield wrong_type
    wrong_item = copy.deepcopy(document)
    wrong_item["summary"]["mfcc"]["mean"][0] = None
    yield wrong_item


def _no_retry(exc: Exception) -> None:
    raise AssertionError(f"a sample must analyse at the first attempt: {exc!r}")


@pytest.mark.parametrize("name", VIEWS)
def test_view_schemas_are_closed_and_every_field_described(
    openapi: dict[str, Any], name: str
) -> None:
    """What a client generator reads of the Spotify-shaped views: every object lists its
    properties, allows no others, and says what each one is."""
    response = openapi["paths"][f"/v1/analyses/{{job_id}}/{name}"]["get"]["responses"]["200"]
    pending = [response["content"]["application/json"]["schema"]]
    described = 0
    while pending:
        schema = resolve(openapi, pending.pop())
        if schema.get("type") == "object" and "properties" in schema:
            assert schema.get("additionalProperties") is False, schema
            assert set(schema["required"]) == set(schema["properties"]), schema
            for field, sub in schema["properties"].items():
                # A nested object is a $ref: its description is the referenced schema's.
                text = sub.get("description") or resolve(openapi, sub).get("description")
                assert text, f"{name}: {field} has no description"
                described += 1
                pending.append(sub)
        elif schema.get("type") == "array":
            pending.append(schema["items"])
    # audio-features: 19 fields and the earshot block's 5; audio-analysis many more.
    assert described >= 24
