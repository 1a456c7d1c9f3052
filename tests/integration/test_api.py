"""Every endpoint of the design note against a real worker process, RabbitMQ, Redis and an MLflow registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.api.fastpath import FastPaths
from matchcast.config import Settings
from matchcast.schemas import FEATURE_NAMES, InlineFeatures
from tests.conftest import ApiProcess, WorkerProcess, key_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(stack_settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack_settings), headers=key_headers(stack_settings)) as c:
        yield c


def metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def upcoming_ids(client: TestClient, n: int = 5) -> list[int]:
    page = client.get("/predict/matches/", params={"limit": n}).json()
    return [m["match_id"] for m in page["items"]]


def features() -> dict[str, float]:
    f = InlineFeatures.model_fields
    return {n: (f[n].metadata[0].ge + f[n].metadata[1].le) / 2 for n in FEATURE_NAMES}  # type: ignore[attr-defined]


def test_upcoming_matches_soonest_first_filtered_and_paginated(client: TestClient) -> None:
    r = client.get("/predict/matches/", params={"limit": 10})
    assert r.status_code == 200
    page = r.json()
    assert page["total"] > 10 and len(page["items"]) == 10
    dates = [m["date"] for m in page["items"]]
    assert dates == sorted(dates) and all(d >= "2026-04-01" for d in dates)
    assert all(m["result"] is None for m in page["items"])
    nxt = client.get("/predict/matches/", params={"limit": 10, "offset": 10}).json()
    assert not {m["match_id"] for m in nxt["items"]} & {m["match_id"] for m in page["items"]}
    serie_a = client.get(
        "/predict/matches/", params={"league": "serie-a", "from": "2026-05-01", "to": "2026-05-10"}
    ).json()
    assert serie_a["total"] > 0
    assert all(m["league"] == "serie-a" and "2026-05-01" <= m["date"] <= "2026-05-10" for m in serie_a["items"])


def test_listing_bounds_give_422(client: TestClient) -> None:
    r = client.get("/predict/matches/", params={"limit": 100000})
    assert r.status_code == 422 and r.json()["type"] == "validation_error"
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]
    for bad in ("0.0", "12345", "2026-1-1"):  # a number is no date, though pydantic would read one as Unix time
        r = client.get("/predict/matches/", params={"from": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "from"], (bad, r.text)


def test_sync_prediction_by_match_id(client: TestClient) -> None:
    before = metric(client, 'prediction_requests_total{source="sync"}')
    ids = upcoming_ids(client, 5)
    preds = [client.get(f"/predict/{i}") for i in ids]
    assert all(p.status_code == 200 for p in preds), [p.text for p in preds]
    bodies = [p.json() for p in preds]
    for i, b in zip(ids, bodies, strict=True):
        pr = b["probabilities"]
        assert b["match_id"] == i and b["home_team"] and b["date"]
        assert abs(pr["home"] + pr["draw"] + pr["away"] - 1) < 1e-9
        assert b["model_name"] == "matchcast" and b["model_version"] == "1" and b["predicted_at"]
    assert len({b["probabilities"]["home"] for b in bodies}) == len(bodies)  # real model outputs differ
    assert metric(client, 'prediction_requests_total{source="sync"}') == before + 5


def test_concurrent_sync_requests_travel_together_and_each_gets_its_own_answer(client: TestClient) -> None:
    ids = upcoming_ids(client, 40)
    groups_before = metric(client, "prediction_sync_group_size_count")
    sent_before = metric(client, "prediction_sync_group_size_sum")
    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        answers = list(pool.map(lambda i: client.get(f"/predict/{i}"), ids))
    assert [a.status_code for a in answers] == [200] * len(ids), [a.text for a in answers if a.status_code != 200]
    assert [a.json()["match_id"] for a in answers] == ids  # nobody gets someone else's prediction
    one_by_one = {i: client.get(f"/predict/{i}").json()["probabilities"] for i in ids[:3]}
    for a in answers[:3]:
        assert a.json()["probabilities"] == pytest.approx(one_by_one[a.json()["match_id"]])
    groups = metric(client, "prediction_sync_group_size_count") - groups_before
    sent = metric(client, "prediction_sync_group_size_sum") - sent_before
    assert sent == len(ids) + 3
    assert groups < len(ids), "40 concurrent requests went out as 40 messages: no grouping"


def test_unknown_match_is_404(client: TestClient) -> None:
    r = client.get("/predict/987654321")
    assert r.status_code == 404
    assert r.json() == {"type": "match_not_found", "detail": "no match with match_id=987654321"}
    assert client.get("/predict/abc").status_code == 422


def test_inline_prediction(client: TestClient) -> None:
    body = {"features": features(), "home_team": "Home FC", "away_team": "Away FC", "date": "2026-06-01"}
    r = client.post("/predict/", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["match_id"] is None and out["home_team"] == "Home FC"
    stronger = {**body, "features": {**features(), "elo_home": 2000.0, "elo_away": 1200.0}}
    assert client.post("/predict/", json=stronger).json()["probabilities"]["home"] > out["probabilities"]["home"]


def test_inline_errors_name_the_field(client: TestClient) -> None:
    bad = client.post("/predict/", json={"features": {**features(), "elo_home": 9999}})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "features", "elo_home"]
    extra = client.post("/predict/", json={"features": features(), "model_uri": "x"})
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "model_uri"]
    garbage = client.post("/predict/", content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 422 and garbage.json()["type"] == "validation_error"


def test_oversized_body_is_413(client: TestClient, stack_settings: Settings) -> None:
    big = b'{"features": {}, "home_team": "' + b"x" * stack_settings.max_body_bytes + b'"}'
    r = client.post("/predict/", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["type"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/predict/", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_async_submit_and_poll(client: TestClient) -> None:
    before = metric(client, 'prediction_requests_total{source="async"}')
    match_id = upcoming_ids(client, 1)[0]
    r = client.post("/predict/async/", json={"match_id": match_id})
    assert r.status_code == 202
    sub = r.json()
    assert sub["status"] == "submitted" and sub["status_url"] == f"/monitoring/task_status/{sub['task_id']}"
    deadline = time.monotonic() + 20
    status = {}
    while time.monotonic() < deadline:
        status = client.get(sub["status_url"]).json()
        if status["status"] == "SUCCESS":
            break
        assert status["status"] in ("PENDING", "STARTED")
        time.sleep(0.1)
    assert status["status"] == "SUCCESS" and status["error"] is None
    assert status["result"]["match_id"] == match_id
    assert metric(client, 'prediction_requests_total{source="async"}') == before + 1


def test_async_unknown_match_and_bad_body(client: TestClient) -> None:
    assert client.post("/predict/async/", json={"match_id": 987654321}).status_code == 404
    r = client.post("/predict/async/", json={"match_id": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "match_id"]


def test_unknown_task_is_404(client: TestClient) -> None:
    r = client.get("/monitoring/task_status/0b6f5b1e-0000-4000-8000-000000000000")
    assert r.status_code == 404 and r.json()["type"] == "task_not_found"
    assert client.get("/monitoring/task_status/bad%20id").status_code == 422


def test_model_info(client: TestClient) -> None:
    info = client.get("/predict/model/info").json()
    assert (info["name"], info["version"], info["alias"]) == ("matchcast", "1", "champion")
    assert info["run_id"] and info["created_at"]
    assert info["training_window"]["start"] < info["training_window"]["end"]
    assert info["feature_names"] == list(FEATURE_NAMES)
    assert 0.15 < info["metrics"]["heldout_rps"] < info["metrics"]["heldout_uniform_rps"]


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["missing"] == [] and set(ready.json()["checks"]) == {
        "broker",
        "result_backend",
        "registry",
        "worker",
    }
    text = client.get("/metrics").text
    for name in ("prediction_requests_total", "prediction_timeouts_total", "http_request_duration_seconds_bucket"):
        assert name in text
    assert 'route="/predict/{match_id}"' in text


def test_several_api_processes_share_a_port_and_report_metrics_together(
    stack_settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    api = ApiProcess(stack_settings, tmp_path / "api.log", "--workers", "2")
    base, headers = api.base, key_headers(stack_settings)
    try:
        api.wait_healthy()
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            ids = [m["match_id"] for m in http.get("/predict/matches/", params={"limit": 12}).json()["items"]]
            with ThreadPoolExecutor(max_workers=6) as pool:  # new connections: both processes take some
                answers = list(pool.map(lambda i: httpx.get(f"{base}/predict/{i}", headers=headers, timeout=30), ids))
            assert [a.json()["match_id"] for a in answers] == ids
            for _ in range(4):  # whichever process answers, the counts are those of all of them
                text = http.get("/metrics").text
                line = next(x for x in text.splitlines() if x.startswith('prediction_requests_total{source="sync"}'))
                assert float(line.rsplit(" ", 1)[1]) == len(ids)
        pids = {p.pid for p in psutil.Process(api.proc.pid).children()}
        assert len(pids) >= 2, "uvicorn did not start two API processes"
        # each process configures its logging; the second may still be warming up while the first answers
        deadline = time.monotonic() + 60
        while api.log_path.read_text().count(" api_started ") < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert api.log_path.read_text().count(" api_started ") == 2
    finally:
        api.close()


@pytest.fixture
def answered_fast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The statuses of the requests the fast paths answered, in order (a spy on FastPaths._answer)."""
    seen: list[int] = []
    answer = FastPaths._answer

    async def spy(send: Any, status: int, work: Any) -> None:
        seen.append(status)
        await answer(send, status, work)

    monkeypatch.setattr(FastPaths, "_answer", staticmethod(spy))
    return seen


def test_async_fast_path_and_route_share_one_contract(
    client: TestClient, stack_settings: Settings, answered_fast: list[int]
) -> None:
    """Everyday submissions are answered below FastAPI; anything else reaches the route; both agree."""
    route_only = stack_settings.model_copy(update={"api_fast_path": False})
    with TestClient(create_app(route_only), headers=key_headers(stack_settings)) as plain:
        # A process reads the feature revisions before it answers: its keys are those of the processes serving.
        assert plain.app.state.parts.feature_revisions().seq is not None  # type: ignore[attr-defined]
        a, b = upcoming_ids(client, 7)[5:7]
        client.get("/predict/model/info")  # the fast path needs the model's metadata cached (a route refreshes it)
        fast = client.post("/predict/async/", json={"match_id": a})
        assert answered_fast == [202] and fast.status_code == 202
        slow = plain.post("/predict/async/", json={"match_id": b})
        assert answered_fast == [202] and slow.status_code == 202  # the switch is off: the route answered
        assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
        assert list(fast.json()) == list(slow.json()) == ["task_id", "status", "status_url"]
        # One idempotency key whichever way a submission came: each sees the other's task.
        assert plain.post("/predict/async/", json={"match_id": a}).json()["task_id"] == fast.json()["task_id"]
        client.get("/predict/model/info")  # the key's verdict and the metadata are cached 10 s: fresh again
        assert client.post("/predict/async/", json={"match_id": b}).json()["task_id"] == slow.json()["task_id"]
        assert answered_fast == [202, 202]
    # What the fast path does not answer goes on to the route, body intact.
    r = client.post("/predict/async/", json={"match_id": True})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "match_id"]
    r = client.post("/predict/async/", json={"match_id": a, "extra": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "extra"]
    assert client.post("/predict/async/", json={"match_id": 987654321}).status_code == 404
    r = client.post("/predict/async/", json={"match_id": a}, headers={"Idempotency-Key": "k" * 201})
    assert r.status_code == 422
    r = client.post("/predict/async/", content=b'{"match_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["type"] == "validation_error"
    r = client.post("/predict/async/", json={"match_id": a}, headers={"X-API-Key": "nope"})
    assert r.status_code == 401 and r.json()["type"] == "unauthorized"
    assert answered_fast == [202, 202]
    # Metrics label fast answers with the route's template, as any other.
    assert 'route="/predict/async/",status="202"' in client.get("/metrics").text


def test_sync_fast_path_and_route_share_one_contract(
    client: TestClient, stack_settings: Settings, answered_fast: list[int]
) -> None:
    match_id = upcoming_ids(client, 1)[0]
    fast = client.get(f"/predict/{match_id}")
    assert answered_fast == [200] and fast.status_code == 200
    route_only = stack_settings.model_copy(update={"api_fast_path": False})
    with TestClient(create_app(route_only), headers=key_headers(stack_settings)) as plain:
        slow = plain.get(f"/predict/{match_id}")
    assert answered_fast == [200] and slow.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    same = ("match_id", "home_team", "probabilities", "model_version", "feature_version")
    assert {k: fast.json()[k] for k in same} == {k: slow.json()[k] for k in same}
    # Not everyday: unknown match, id out of range, unknown key, an Idempotency-Key; all the route's answers.
    assert client.get("/predict/987654321").json()["type"] == "match_not_found"
    assert client.get(f"/predict/{2**31}").status_code == 404
    assert client.get("/predict/\u00b2").status_code == 422  # isdigit() says yes to "²"; int() does not
    assert client.get("/predict/" + "9" * 5000).status_code in (404, 422)  # longer than int() reads
    assert client.get(f"/predict/{match_id}", headers={"X-API-Key": "nope"}).status_code == 401
    assert answered_fast == [200]
    text = client.get("/metrics").text
    assert 'method="GET",route="/predict/{match_id}",status="200"' in text


def test_async_rate_limit_counts_each_request_once(client: TestClient, stack_settings: Settings) -> None:
    limited = stack_settings.model_copy(update={"rate_limit_per_s": 0.2, "rate_limit_burst": 3})
    ids = upcoming_ids(client, 12)[8:12]
    with TestClient(create_app(limited), headers=key_headers(stack_settings)) as c:
        codes = [c.post("/predict/async/", json={"match_id": m}).status_code for m in ids]
        assert codes == [202, 202, 202, 429]
