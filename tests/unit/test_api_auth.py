"""API keys on the HTTP API: 401 without a valid key, 403 for the wrong role, 429 past the rate limit.

No service is needed: the routes used here read only the (SQLite) match store, or fail before any work.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.api.auth import PROBES, required_role
from matchcast.api.deps import SingleFlight
from matchcast.config import Settings
from matchcast.service.auth import ApiKeyService, key_service_for
from tests.conftest import free_port


def settings_for(home: Path, **overrides: object) -> Settings:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens: the app starts, brokers are never reached
    values: dict[str, object] = {"home": home, "broker_url": dead, "result_backend": dead, "rate_limit_per_s": 0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def token(settings: Settings, role: str) -> str:
    return key_service_for(settings).create(role)[1]


LISTING = "/predict/matches/"


def test_no_key_is_401_with_bearer_challenge(client: TestClient) -> None:
    r = client.get(LISTING)
    assert r.status_code == 401
    assert r.json()["type"] == "unauthorized" and "X-API-Key" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/predict/", json={}).status_code == 401  # before the body is looked at
    assert client.get("/predict/1").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "nope"},
        {"X-API-Key": "mc_0123456789ab_" + "A" * 43},
        {"Authorization": "Bearer mc_0123456789ab_" + "A" * 43},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer"},
        {"X-API-Key": ""},
    ],
)
def test_invalid_keys_are_401(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get(LISTING, headers=headers)
    assert r.status_code == 401 and r.json()["type"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_valid_key_in_either_header(client: TestClient, settings: Settings) -> None:
    t = token(settings, "predict")
    assert client.get(LISTING, headers={"X-API-Key": t}).status_code == 200
    assert client.get(LISTING, headers={"Authorization": f"Bearer {t}"}).status_code == 200
    assert client.get(LISTING, headers={"Authorization": f"bearer {t}", "X-API-Key": t}).status_code == 200
    other = token(settings, "predict")
    r = client.get(LISTING, headers={"Authorization": f"Bearer {t}", "X-API-Key": other})
    assert r.status_code == 401 and "different keys" in r.json()["detail"]
    assert t not in r.text


def test_revoked_key_is_401(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, api_key_cache_s=0)
    keys = key_service_for(settings)
    info, t = keys.create("predict")
    with TestClient(create_app(settings), headers={"X-API-Key": t}) as c:
        assert c.get(LISTING).status_code == 200
        keys.revoke(info.key_id)  # as `matchcast keys revoke` would, from another process
        assert c.get(LISTING).status_code == 401


def operations(client: TestClient) -> list[tuple[str, str, str]]:
    """(method, path template, a concrete path) of every operation the API serves, from its OpenAPI schema."""
    spec = create_app(client.app.state.parts.settings).openapi()  # type: ignore[attr-defined]
    found = []
    for template, item in spec["paths"].items():
        path = re.sub(r"\{[^}]*id[^}]*\}", "1", template).replace("/task_status/1", "/task_status/abc-1")
        found += [
            (method.upper(), template, path) for method in item if method in ("get", "post", "put", "patch", "delete")
        ]
    return found


def test_every_operation_needs_a_key(client: TestClient) -> None:
    """Whatever routes exist (other modules add some), none answers without a key, except the open probes."""
    ops = operations(client)
    assert len(ops) >= 8
    for method, template, path in ops:
        r = client.request(method, path)
        if template in PROBES:
            assert r.status_code != 401, template
        else:
            assert r.status_code == 401, (method, path, r.status_code)


def test_predict_key_cannot_do_admin_things(client: TestClient, settings: Settings) -> None:
    """Every route that needs admin (state changes, dead letters, anything not a prediction or status) is 403."""
    predict, admin = token(settings, "predict"), token(settings, "admin")
    admin_ops = [(m, p) for m, t, p in operations(client) if required_role(m, t, settings) == "admin"]
    for method, path in admin_ops:
        r = client.request(method, path, headers={"X-API-Key": predict})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["type"] == "forbidden" and "admin" in r.json()["detail"]
        assert client.request(method, path).status_code == 401
        assert client.request(method, path, headers={"X-API-Key": admin}).status_code not in (401, 403)
    # A predict key may predict, list, read task status.
    assert client.get(LISTING, headers={"X-API-Key": predict}).status_code == 200
    assert client.get("/monitoring/task_status/abc", headers={"X-API-Key": predict}).status_code != 403
    live = client.get("/monitoring/live", headers={"X-API-Key": predict})  # the live scores: nothing scored yet
    assert live.status_code == 200 and live.json()["models"] == [] and live.json()["comparisons"] == []


def test_required_roles() -> None:
    s = Settings()
    assert required_role("GET", "/predict/{match_id}", s) == "predict"
    assert required_role("POST", "/predict/async/", s) == "predict"
    assert required_role("GET", "/monitoring/task_status/{task_id}", s) == "predict"
    assert required_role("DELETE", "/monitoring/task_status/{task_id}", s) == "admin"
    assert required_role("GET", "/monitoring/live", s) == "predict"
    assert required_role("GET", "/monitoring/live/predictions", s) == "predict"
    assert required_role("POST", "/monitoring/dead_letters/{dead_letter_id}/replay", s) == "admin"
    assert required_role("GET", "/monitoring/dead_letters", s) == "admin"
    assert required_role("GET", "/anything/new", s) == "admin"
    assert required_role("GET", "/health", s) is None
    assert required_role("GET", "/metrics", Settings(probes_auth="predict")) == "predict"


def test_probes_open_by_default(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.get("/ready").status_code in (200, 503)  # nothing reachable here, but no key needed


def test_probes_behind_keys_when_configured(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, probes_auth="admin")
    predict, admin = token(settings, "predict"), token(settings, "admin")
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": predict}).status_code == 403
        assert c.get("/metrics", headers={"X-API-Key": admin}).status_code == 200
        assert "security" in c.get("/openapi.json").json()["paths"]["/health"]["get"]


def test_auth_off_needs_no_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, auth="off")
    with TestClient(create_app(settings)) as c:
        assert c.get(LISTING).status_code == 200
        spec = c.get("/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
        assert all("security" not in op for item in spec["paths"].values() for op in item.values())


def test_openapi_declares_keys(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    op = spec["paths"]["/predict/"]["post"]
    assert op["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"401", "403", "429"} <= set(op["responses"])
    health = spec["paths"]["/health"]["get"]
    assert "security" not in health and "401" not in health["responses"]


def test_rate_limit_per_key_is_429_with_retry_after(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, rate_limit_per_s=0.5, rate_limit_burst=3)
    a, b = token(settings, "predict"), token(settings, "predict")
    with TestClient(create_app(settings)) as c:
        codes = [c.get(LISTING, headers={"X-API-Key": a}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get(LISTING, headers={"X-API-Key": a})
        assert r.status_code == 429 and r.json()["type"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 2
        assert c.get(LISTING, headers={"X-API-Key": b}).status_code == 200  # per key
        assert c.get("/health").status_code == 200  # open probes are not limited
        assert c.get(LISTING).status_code == 401  # no key: refused before any bucket is touched


def test_rate_limit_with_auth_off_is_per_client(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, auth="off", rate_limit_per_s=0.5, rate_limit_burst=2)
    with TestClient(create_app(settings)) as c:
        assert [c.get(LISTING).status_code for _ in range(3)] == [200, 200, 429]


def test_concurrent_requests_share_one_key_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a key's cached verdict is missing or expired, the requests in flight wait for one lookup together."""
    settings = settings_for(tmp_path)
    key = token(settings, "predict")
    calls: list[str] = []
    verify = ApiKeyService.verify

    def slow_verify(self: ApiKeyService, t: str) -> object:
        calls.append(t)
        time.sleep(0.3)  # a slow store: every request arriving meanwhile finds the lookup under way
        return verify(self, t)

    monkeypatch.setattr(ApiKeyService, "verify", slow_verify)
    with TestClient(create_app(settings)) as c, ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: c.get(LISTING, headers={"X-API-Key": key}).status_code, range(32)))
        assert codes == [200] * 32
        assert 1 <= len(calls) <= 3, len(calls)
        calls.clear()
        assert c.get(LISTING, headers={"X-API-Key": "mc_0123456789ab_" + "B" * 43}).status_code == 401
        assert c.get(LISTING, headers={"X-API-Key": key}).status_code == 200  # cached now
        assert len(calls) == 1  # the unknown key was looked up; a finished lookup is not reused


def test_single_flight_shares_results_and_errors() -> None:
    runs: list[int] = []

    def work() -> int:
        runs.append(1)
        time.sleep(0.05)
        return len(runs)

    def broken() -> int:
        raise RuntimeError("store down")

    async def scenario() -> None:
        flights = SingleFlight()
        assert await asyncio.gather(*(flights.run("k", work) for _ in range(10))) == [1] * 10
        assert await flights.run("k", work) == 2  # a new run once the last one ended
        results = await asyncio.gather(*(flights.run("e", broken) for _ in range(3)), return_exceptions=True)
        assert [type(r) for r in results] == [RuntimeError] * 3

    asyncio.run(scenario())
