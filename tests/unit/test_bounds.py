"""Every request the API accepts is bounded, read from its OpenAPI schema (so routes added later are checked too)."""

from __future__ import annotations

from typing import Any

import pytest

from matchcast.api.app import create_app
from matchcast.config import Settings


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(Settings(home=tmp_path_factory.mktemp("bounds"))).openapi()


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def unbounded(spec: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    """Where a request schema lets through something without a limit."""
    schema = resolve(spec, schema)
    problems: list[str] = []
    for key in ("ge", "le", "gt", "lt"):  # pydantic constraints that did not become JSON Schema keywords
        if key in schema:
            problems.append(f"{where}: bound {key!r} is not expressed as minimum/maximum")
    for alt in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        problems += unbounded(spec, alt, where)
    kind = schema.get("type")
    if kind in ("integer", "number") and not {"minimum", "exclusiveMinimum"} & set(schema):
        problems.append(f"{where}: no minimum")
    if kind in ("integer", "number") and not {"maximum", "exclusiveMaximum"} & set(schema):
        problems.append(f"{where}: no maximum")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema and "format" not in schema:
        problems.append(f"{where}: string without maxLength")
    if kind == "array":
        if "maxItems" not in schema:
            problems.append(f"{where}: array without maxItems")
        problems += unbounded(spec, schema.get("items", {}), f"{where}[]")
    if kind == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: unknown fields are not refused")
        for name, sub in schema.get("properties", {}).items():
            problems += unbounded(spec, sub, f"{where}.{name}")
    return problems


def test_every_request_body_is_bounded_and_closed(spec: dict[str, Any]) -> None:
    problems: list[str] = []
    bodies = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                bodies += 1
                problems += unbounded(spec, body["schema"], f"{method.upper()} {path} ({media})")
    assert bodies >= 2
    assert problems == []


def test_every_query_and_path_parameter_is_bounded(spec: dict[str, Any]) -> None:
    problems: list[str] = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                where = f"{method.upper()} {path} {param['in']} {param['name']}"
                schema = resolve(spec, param.get("schema", {}))
                if param["in"] == "path" and schema.get("type") == "integer":
                    continue  # an id out of range is simply unknown: 404, checked in the handler
                if schema.get("type") == "boolean":
                    continue
                problems += unbounded(spec, schema, where)
    assert problems == []


def test_the_listing_limits(spec: dict[str, Any]) -> None:
    params = {p["name"]: p["schema"] for p in spec["paths"]["/predict/matches/"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == 200 and params["offset"]["maximum"] == 1_000_000
    assert params["league"]["anyOf"][0]["maxLength"] == 64


def test_the_checker_sees_problems(spec: dict[str, Any]) -> None:
    assert unbounded(spec, {"type": "integer", "minimum": 1}, "x") == ["x: no maximum"]
    assert unbounded(spec, {"type": "object", "properties": {"s": {"type": "string"}}}, "o") == [
        "o: unknown fields are not refused",
        "o.s: string without maxLength",
    ]
    assert unbounded(spec, {"type": "array", "items": {"type": "integer", "ge": 1}}, "a") == [
        "a: array without maxItems",
        "a[]: bound 'ge' is not expressed as minimum/maximum",
        "a[]: no minimum",
        "a[]: no maximum",
    ]
