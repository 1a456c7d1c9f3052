"""Goal markets through every prediction path of the API, against a real worker: sync, async, batch, inline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.config import Settings
from tests.conftest import WorkerProcess, key_headers
from tests.integration.test_api import features, upcoming_ids

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(stack_settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack_settings), headers=key_headers(stack_settings)) as c:
        yield c


def check(pred: dict[str, Any], grid: bool) -> None:
    assert set(pred["expected_goals"]) == {"home", "away"}
    m = pred["markets"]
    assert [o["line"] for o in m["over_under"]] == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert [a["line"] for a in m["asian_handicap"]] == [k / 2 for k in range(-5, 6)]
    assert len(m["top_scores"]) == 5 and set(m["btts"]) == {"yes", "no"}
    assert set(m["double_chance"]) == {"home_draw", "home_away", "draw_away"} and set(m["draw_no_bet"]) == {
        "home",
        "away",
    }
    if not grid:
        assert pred["grid"] is None
        return
    g = np.array(pred["grid"])
    assert g.shape == (11, 11)
    i, j = np.indices(g.shape)
    p = pred["probabilities"]
    for region, outcome in ((i > j, "home"), (i == j, "draw"), (i < j, "away")):
        assert abs(g[region].sum() - p[outcome]) < 1e-9
    assert m["btts"]["yes"] == pytest.approx(g[1:, 1:].sum(), abs=1e-12)


def poll(client: TestClient, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] == "SUCCESS":
            return body["result"]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no result at {url}")


def test_sync_by_id_with_and_without_grid(client: TestClient) -> None:
    match_id = upcoming_ids(client, 1)[0]
    check(client.get(f"/predict/{match_id}").json(), grid=False)
    check(client.get(f"/predict/{match_id}", params={"grid": "true"}).json(), grid=True)
    assert client.get(f"/predict/{match_id}", params={"grid": "maybe"}).status_code == 422


def test_inline_with_grid(client: TestClient) -> None:
    r = client.post("/predict/", json={"features": features(), "grid": True})
    assert r.status_code == 200, r.text
    check(r.json(), grid=True)
    check(client.post("/predict/", json={"features": features()}).json(), grid=False)
    assert client.post("/predict/", json={"features": features(), "grid": 1}).status_code == 422


def test_async_and_batch_carry_markets(client: TestClient) -> None:
    ids = upcoming_ids(client, 3)
    plain = client.post("/predict/async/", json={"match_id": ids[0]}).json()
    gridded = client.post("/predict/async/", json={"match_id": ids[0], "grid": True}).json()
    assert plain["task_id"] != gridded["task_id"]  # a grid is another answer: another idempotency key
    check(poll(client, plain["status_url"]), grid=False)
    check(poll(client, gridded["status_url"]), grid=True)
    batch = client.post("/predict/async/batch", json={"match_ids": ids}).json()
    for task in batch["tasks"]:
        check(poll(client, task["status_url"]), grid=False)


def test_openapi_documents_the_markets(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("Markets", "ExpectedGoals", "OverUnder", "AsianHandicap", "ScoreProbability", "BothTeamsToScore"):
        assert name in schemas
    assert schemas["OverUnder"]["properties"]["line"]["examples"] == [2.5]
    params = doc["paths"]["/predict/{match_id}"]["get"]["parameters"]
    assert any(p["name"] == "grid" for p in params)
    assert "grid" in schemas["InlinePredictionRequest"]["properties"]
