"""The access decision the routes and the fast paths share (api/access.py), and that both reach the same verdict.

No service is needed: the route compared is the match listing (SQLite store only); the fast path's decision is
asked directly, on the ASGI scope it would see, with the app's own key service and rate limiter.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from matchcast.api import fastpath
from matchcast.api.access import admit, presented_key
from matchcast.api.app import create_app
from matchcast.api.deps import Parts
from matchcast.config import Settings
from matchcast.errors import Forbidden, RateLimited, Unauthorized
from matchcast.schemas import MATCH_ID_MAX, AsyncPredictionRequest, BatchPredictionRequest
from matchcast.service.auth import ApiKeyInfo, key_service_for
from matchcast.service.ratelimit import TokenBuckets
from tests.unit.test_api_auth import LISTING, settings_for

CLIENT = ("testclient", 50000)  # the client address TestClient's requests come from
UNKNOWN = "mc_0123456789ab_" + "C" * 43  # well formed, never created

# Header combinations as sent; {p} and {q} are two predict keys, {a} an admin key.
TABLE: list[list[tuple[str, str]]] = [
    [],
    [("X-API-Key", "{p}")],
    [("X-API-Key", "  {p} ")],
    [("X-API-Key", "{a}")],
    [("Authorization", "Bearer {p}")],
    [("Authorization", "bearer {p}")],
    [("Authorization", "BEARER   {a}  ")],
    [("Authorization", "Bearer {p}"), ("X-API-Key", "{p}")],
    [("Authorization", "Bearer {p}"), ("X-API-Key", "{q}")],
    [("Authorization", "Bearer {p}"), ("X-API-Key", "")],
    [("Authorization", "Bearer {p}"), ("X-API-Key", "   ")],
    [("Authorization", "Bearer"), ("X-API-Key", "{p}")],
    [("Authorization", "Bearer    "), ("X-API-Key", "{p}")],
    [("Authorization", ""), ("X-API-Key", "{p}")],
    [("Authorization", "Basic dXNlcjpwdw=="), ("X-API-Key", "{p}")],
    [("Authorization", "Token {p}")],
    [("Authorization", " Bearer {p}")],
    [("X-API-Key", "")],
    [("X-API-Key", "nope")],
    [("X-API-Key", UNKNOWN)],
    [("Authorization", f"Bearer {UNKNOWN}"), ("X-API-Key", UNKNOWN)],
    [("X-API-Key", "{p}"), ("X-API-Key", "{p}")],  # repeated: the fast path leaves it to the route
    [("X-API-Key", "{p}"), ("X-API-Key", "{q}")],
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(tmp_path_factory.mktemp("access"))


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> dict[str, str]:
    keys = key_service_for(settings)
    return {"p": keys.create("predict")[1], "q": keys.create("predict")[1], "a": keys.create("admin")[1]}


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def parts_of(client: TestClient) -> Parts:
    parts: Parts = client.app.state.parts  # type: ignore[attr-defined]
    return parts


def fast_admits(client: TestClient, headers: list[tuple[str, str]], method: str = "GET") -> bool:
    """What the fast path decides for a request with these headers (True: it answers it itself)."""
    path, template = ("/predict/1", fastpath.SYNC_TEMPLATE) if method == "GET" else (fastpath.ASYNC_PATH,) * 2
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    scope = {"type": "http", "method": method, "path": path, "headers": raw, "client": CLIENT}
    found = fastpath._headers(scope)
    return found is not None and fastpath._admitted(scope, found, parts_of(client), template)


def filled(headers: list[tuple[str, str]], tokens: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, v.format(**tokens)) for k, v in headers]


@pytest.mark.parametrize("headers", TABLE, ids=repr)
def test_fast_path_admits_exactly_what_the_route_lets_through(
    client: TestClient, tokens: dict[str, str], headers: list[tuple[str, str]]
) -> None:
    """With every key's verdict cached, the fast path answers a request itself exactly when the route would let
    it through; a header sent twice it always leaves to the route."""
    headers = filled(headers, tokens)
    keys = parts_of(client).keys
    assert keys is not None
    for t in (*tokens.values(), UNKNOWN):
        keys.verify(t)  # the verdicts the route caches once it has looked a key up
    route = client.get(LISTING, headers=headers)
    repeated = len({k.lower() for k, _ in headers}) < len(headers)
    for method in ("GET", "POST"):
        assert fast_admits(client, headers, method) == (route.status_code == 200 and not repeated), route.text
    if route.status_code == 401:
        assert route.json()["type"] == "unauthorized"


@pytest.mark.parametrize(
    ("authorization", "api_key", "answer"),
    [
        (None, "k", "k"),
        (None, " k ", "k"),
        ("Bearer k", None, "k"),
        ("bEaReR  k ", "k", "k"),
        ("Bearer k", "", "k"),
        ("Bearer k", " ", "k"),
        (None, None, "an API key is required"),
        (None, "", "an API key is required"),
        (None, "  ", "an API key is required"),
        ("Bearer k", "j", "different keys"),
        ("Bearer", "k", "must read `Bearer <API key>`"),
        ("Bearer   ", "k", "must read `Bearer <API key>`"),
        ("", "k", "must read `Bearer <API key>`"),
        (" Bearer k", None, "must read `Bearer <API key>`"),
        ("Basic k", "k", "must read `Bearer <API key>`"),
    ],
)
def test_presented_key(authorization: str | None, api_key: str | None, answer: str) -> None:
    if len(answer) == 1:
        assert presented_key(authorization, api_key) == answer
    else:
        with pytest.raises(Unauthorized, match=answer.replace("`", ".")):
            presented_key(authorization, api_key)


def test_admit_refuses_in_the_routes_order() -> None:
    """401 before any token is taken; then 429; then 403 (a token is taken for a request refused by role)."""
    settings = Settings(rate_limit_per_s=0.001, rate_limit_burst=1)
    limiter = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
    predict = ApiKeyInfo("0123456789ab", "p", "predict", datetime.now(UTC), None)
    with pytest.raises(Unauthorized, match="invalid or revoked"):
        admit(settings, limiter, "predict", None, CLIENT)
    with pytest.raises(Forbidden, match="needs an admin key"):
        admit(settings, limiter, "admin", predict, CLIENT)
    admit(settings, limiter, "predict", predict, CLIENT, take=False)  # this request's token was taken already
    with pytest.raises(RateLimited) as refused:
        admit(settings, limiter, "predict", predict, CLIENT)
    assert refused.value.retry_after_s >= 1
    admit(settings.model_copy(update={"auth": "off"}), limiter, "admin", None, CLIENT)  # another bucket: the client's


@pytest.mark.parametrize("auth", ["required", "off"])
def test_fast_path_and_route_take_from_one_bucket(tmp_path: Path, auth: str) -> None:
    """Each request takes one token from the same bucket, whichever of the two decides it."""
    settings = settings_for(tmp_path, auth=auth, rate_limit_per_s=0.001, rate_limit_burst=3)
    key, other = (key_service_for(settings).create("predict")[1] for _ in range(2))
    headers = [("X-API-Key", key)] if auth == "required" else []
    with TestClient(create_app(settings)) as c:
        assert c.get(LISTING, headers=headers).status_code == 200  # verifies the key: its verdict is cached now
        assert fast_admits(c, headers) and fast_admits(c, headers, "POST")
        assert not fast_admits(c, headers)  # the bucket is empty: the route will answer 429
        r = c.get(LISTING, headers=headers)
        assert r.status_code == 429 and r.json()["type"] == "rate_limited"
        if auth == "required":
            assert c.get(LISTING, headers={"X-API-Key": other}).status_code == 200  # per key
            assert fast_admits(c, [("X-API-Key", other)])


def test_fast_path_leaves_an_uncached_key_to_the_route(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    key = key_service_for(settings).create("predict")[1]
    with TestClient(create_app(settings)) as c:
        assert not fast_admits(c, [("X-API-Key", key)])  # not verified yet: the route looks it up
        assert c.get(LISTING, headers={"X-API-Key": key}).status_code == 200
        assert fast_admits(c, [("X-API-Key", key)])


def test_one_match_id_bound() -> None:
    assert AsyncPredictionRequest.model_validate({"match_id": MATCH_ID_MAX}).match_id == MATCH_ID_MAX
    for bad in (0, MATCH_ID_MAX + 1):
        with pytest.raises(ValueError):
            AsyncPredictionRequest.model_validate({"match_id": bad})
        with pytest.raises(ValueError):
            BatchPredictionRequest.model_validate({"match_ids": [1, bad]})
    assert fastpath._is_match_id(str(MATCH_ID_MAX)) and not fastpath._is_match_id("1" + str(MATCH_ID_MAX))
