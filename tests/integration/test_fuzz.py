"""The OpenAPI document against a real ``matchcast api`` process backed by the test stack.

Schemathesis runs as ``schemathesis run --checks all`` would: its examples, coverage and fuzzing phases, positive
and negative cases, every check, sent with a valid admin key through the schema's security schemes. Passing
means: no 5xx but a documented 503/504; every answer matches its declared status, content type, headers and
schema; invalid input is refused with a 4xx; a schema-valid request is refused only on its meaning (a 422 the
operation declares with a type other than ``validation_error``, e.g. a callback URL while callbacks are off);
an undocumented method gets 405 with an ``Allow`` that lists every documented one; secured operations refuse
requests without the key. The number of cases is printed (README, "Security").

And every request body example of the document (what ``/docs`` offers as a ready body) is accepted as it stands.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from matchcast.config import Settings
from matchcast.schemas import EXAMPLE_MATCH_IDS
from matchcast.service.feeds import check_upload
from tests.conftest import ApiProcess, MatchIds, api_key

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 60
SERVER_ERRORS_ALLOWED = ["503", "504"]  # and only where documented: `status_code_conformance` holds that
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # Schemathesis' default for valid data


def refusals_on_meaning(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of the operations that declare a 422 with a type other than ``validation_error``."""
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            schema = op.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
            ref = schema.get("schema", {}).get("$ref", "")
            body = spec["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
            if set(body.get("properties", {}).get("type", {}).get("enum", [])) - {"validation_error"}:
                found.append((method.upper(), path))
    return found


def test_schemathesis_with_all_checks_finds_nothing(
    live_api: ApiProcess, stack_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    import schemathesis
    from schemathesis import engine
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events

    spec = httpx.get(f"{live_api.base}/openapi.json", timeout=10).json()
    meaningful = refusals_on_meaning(spec)
    assert ("POST", "/predict/async/") in meaningful

    @schemathesis.check
    def refused_only_on_meaning(ctx: Any, response: Any, case: Any) -> bool | None:
        """A schema-valid request refused with 422 must be refused on its meaning, never by validation."""
        if case.meta is not None and case.meta.generation.mode.is_positive and response.status_code == 422:
            kind = response.json().get("type")
            assert kind != "validation_error", f"schema-valid request refused by validation: {response.text[:500]}"
        return None

    token = api_key(stack_settings, "admin")
    config = SchemathesisConfig.from_dict(
        {
            # Schemathesis authenticates through the schema's own security schemes (and checks they are enforced).
            "auth": {"openapi": {"apiKey": {"api_key": token}, "bearer": {"bearer": token}}},
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", *SERVER_ERRORS_ALLOWED]}},
            "operations": [
                {
                    "include-method": method,
                    "include-path": path,
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
                }
                for method, path in meaningful
            ],
        }
    )
    config.projects.override.checks.update(included_check_names=["all"])
    # Not POST /admin/ingest: a fuzzer's accepted uploads would rewrite the session's match store, which later tests
    # read (its checks have tests of their own: tests/integration/test_feeds_stack.py, tests/unit/test_feeds.py).
    schema = schemathesis.openapi.from_url(f"{live_api.base}/openapi.json", config=config).exclude(path="/admin/ingest")

    cases: Counter[str] = Counter()
    statuses: Counter[str] = Counter()  # "positive 200", "negative 422", ...
    failures: list[str] = []
    refused_with_key: list[str] = []  # coverage cases also probe the security headers with other values
    started = time.monotonic()
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, interaction in recorder.interactions.items():
                case = recorder.cases[case_id].value
                if interaction.response is None or case.meta is None:
                    continue
                cases[case.operation.label] += 1
                mode, status = case.meta.generation.mode.value, interaction.response.status_code
                statuses[f"{mode} {status}"] += 1
                sent = {v for values in interaction.request.headers.values() for v in values}
                if mode == "positive" and status in (401, 403) and sent & {token, f"Bearer {token}"}:
                    refused_with_key.append(f"{case.operation.label}: {status} {interaction.request.uri}")
            for checks in recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(f"{recorder.label} [{check.name}]: {failure.title}\n{failure.message[:800]}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"error: {event}")
    total = sum(cases.values())
    elapsed = time.monotonic() - started
    line = (
        f"schemathesis (all checks): {total} cases over {len(cases)} operations in {elapsed:.0f} s; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    with capsys.disabled():  # shown in the run's output, not only on failure
        print(f"\n{line}")
    assert not failures, "\n\n".join(sorted(set(failures)))
    assert len(cases) >= 8 and total >= 300
    # Schema-valid requests with the key are never refused for auth: the key works on every operation.
    assert not refused_with_key, refused_with_key[:10]
    assert statuses["positive 200"] > 100


def example_bodies(spec: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, media type) for every example of every request body, from the media type or its
    schema."""
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for media_type, media in op.get("requestBody", {}).get("content", {}).items():
                schema = media.get("schema", {})
                if "$ref" in schema:
                    schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
                examples = [e["value"] for e in media.get("examples", {}).values()] + schema.get("examples", [])
                if "example" in media:
                    examples.append(media["example"])
                found += [(method.upper(), path, body, media_type) for body in examples]
                assert examples, f"{method.upper()} {path}: a request body without an example"
    return found


def on_the_stack(body: Any, match_ids: MatchIds) -> Any:
    """The example with its match ids (those of the bundled data, as ``make up`` loads it) as the stack's ids."""
    if isinstance(body, dict):
        return {k: on_the_stack(v, match_ids) for k, v in body.items()}
    if isinstance(body, list):
        return [on_the_stack(v, match_ids) for v in body]
    return match_ids(body) if isinstance(body, int) and body in EXAMPLE_MATCH_IDS else body


def test_every_request_body_example_is_accepted(
    live_api: ApiProcess, stack_settings: Settings, match_ids: MatchIds
) -> None:
    spec = httpx.get(f"{live_api.base}/openapi.json", timeout=10).json()
    bodies = example_bodies(spec)
    assert {(m, p) for m, p, _, _ in bodies} >= {
        ("POST", "/predict/"),
        ("POST", "/predict/async/"),
        ("POST", "/admin/ingest"),
    }
    keys = {role: {"X-API-Key": api_key(stack_settings, role)} for role in ("predict", "admin")}
    refused = []
    for method, path, body, media_type in bodies:
        headers = keys["admin" if path.startswith("/admin/") else "predict"]
        if media_type != "application/json":
            # A file (POST /admin/ingest's CSV): checked as the route checks it, not queued, since an ingest would
            # change the session's match store that later tests read (tests/integration/test_feeds_stack.py
            # uploads end to end on a store of its own).
            assert check_upload(body.encode(), "example.csv", league=None, settings=stack_settings) > 0
            continue
        r = httpx.request(method, live_api.base + path, json=on_the_stack(body, match_ids), headers=headers, timeout=30)
        if not 200 <= r.status_code < 300:
            refused.append(f"{method} {path}: {r.status_code} {r.text[:500]}")
    assert not refused, "\n".join(refused)
