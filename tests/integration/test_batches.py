"""A batch is a resource (status, CSV, cancel); deadlines end unstarted work EXPIRED; expired ids answer 410.

Real RabbitMQ, Redis and worker processes; the cancel and deadline cases use a vhost of their own whose worker
starts only after the work was cancelled or its deadline passed.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.config import Settings
from matchcast.service.wiring import store_for
from tests.conftest import WorkerProcess, base_settings, key_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(stack_settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack_settings), headers=key_headers(stack_settings)) as c:
        yield c


def stored_ids(settings: Settings, n: int) -> list[int]:
    return [m.match_id for m in store_for(settings).all_matches()][-n:]


def wait_batch(client: TestClient, url: str, want: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] == want or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_a_batch_has_one_status_with_counts_times_pages_and_csv(client: TestClient, stack_settings: Settings) -> None:
    ids = stored_ids(stack_settings, 150)
    r = client.post("/predict/async/batch", json={"match_ids": ids})
    assert r.status_code == 202, r.text
    sub = r.json()
    assert sub["status_url"] == f"/monitoring/batch_status/{sub['batch_id']}" and sub["count"] == 150
    assert [t["match_id"] for t in sub["tasks"]] == ids  # the per-task ids and URLs stay
    done = wait_batch(client, sub["status_url"], "DONE")
    assert done["status"] == "DONE", done
    assert done["counts"] == {"SUCCESS": 150} and done["done"] == 150 and done["done_fraction"] == 1.0
    created, started, finished = (datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished
    assert len(done["results"]) == 100 and done["failures"] == []  # default page
    page = client.get(sub["status_url"], params={"offset": 140, "limit": 50}).json()
    assert [x["match_id"] for x in page["results"]] == ids[140:]
    assert all(x["result"]["match_id"] == x["match_id"] for x in page["results"])
    one = client.get(sub["tasks"][3]["status_url"]).json()
    assert one["status"] == "SUCCESS" and one["result"]["match_id"] == ids[3]

    table = client.get(sub["status_url"], params={"format": "csv"})
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [int(x["match_id"]) for x in rows] == ids and {x["status"] for x in rows} == {"SUCCESS"}
    assert all(abs(float(x["home"]) + float(x["draw"]) + float(x["away"]) - 1) < 1e-6 for x in rows)

    unknown = client.get(f"/monitoring/batch_status/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json()["type"] == "batch_not_found"
    # A finished batch has nothing left to cancel.
    assert client.delete(sub["status_url"]).json() == {
        "batch_id": sub["batch_id"],
        "cancelled": 0,
        "not_cancelled": 150,
    }


def test_deadlines_are_checked_before_computing_and_checked(client: TestClient, stack_settings: Settings) -> None:
    ids = stored_ids(stack_settings, 3)
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    for body in ({"match_id": ids[0], "deadline": past}, {"match_ids": ids, "ttl_s": 10**7}):
        path = "/predict/async/" if "match_id" in body else "/predict/async/batch"
        r = client.post(path, json=body)
        assert r.status_code == 422 and r.json()["type"] in ("invalid_input", "validation_error"), r.text
    both = client.post("/predict/async/", json={"match_id": ids[0], "ttl_s": 5, "deadline": past})
    assert both.status_code == 422
    naive = client.post("/predict/async/", json={"match_id": ids[0], "deadline": "2030-01-01T00:00:00"})
    assert naive.status_code == 422
    # A generous deadline changes nothing: the work is done.
    ok = client.post("/predict/async/", json={"match_id": ids[1], "ttl_s": 600}).json()
    deadline = time.monotonic() + 20
    while (s := client.get(ok["status_url"]).json())["status"] != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert s["status"] == "SUCCESS"


def test_cancelled_and_late_work_is_never_computed(
    tmp_path: Path, trained_home: Path, fresh_vhost_url: str, redis_db: int
) -> None:
    settings = base_settings(
        trained_home, broker_url=fresh_vhost_url, result_backend=f"redis://127.0.0.1:6379/{redis_db}"
    )
    ids = stored_ids(settings, 250)
    with TestClient(create_app(settings), headers=key_headers(settings)) as client:
        doomed = client.post("/predict/async/batch", json={"match_ids": ids[:120]}).json()
        late = client.post("/predict/async/batch", json={"match_ids": ids[120:200], "ttl_s": 1}).json()
        # A key of its own: the automatic one may already point at a finished task of an earlier test (the
        # session's Redis database is shared, and an earlier test may have predicted this match).
        own_key = {"Idempotency-Key": f"late-single-{uuid.uuid4().hex}"}
        single = client.post("/predict/async/", json={"match_id": ids[200], "ttl_s": 1}, headers=own_key).json()
        kept = client.post("/predict/async/batch", json={"match_ids": ids[210:250], "ttl_s": 600}).json()
        cancelled = client.post(f"{doomed['status_url']}/cancel")
        assert cancelled.status_code == 202
        assert cancelled.json() == {"batch_id": doomed["batch_id"], "cancelled": 120, "not_cancelled": 0}
        status = client.get(doomed["status_url"]).json()
        assert status["status"] == "CANCELLED" and status["counts"] == {"REVOKED": 120} and status["cancelled_at"]
        assert len(status["failures"]) == 100 and status["failures"][0]["error"] == "TaskRevokedError: cancelled"
        time.sleep(1.5)  # past the deadlines, before any worker starts
        worker = WorkerProcess(settings, f"late-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
        try:
            worker.wait_ready()
            done = wait_batch(client, kept["status_url"], "DONE")
            assert done["counts"] == {"SUCCESS": 40}, done
            gone = wait_batch(client, late["status_url"], "DONE")
            assert gone["counts"] == {"EXPIRED": 80}, gone
            failure = gone["failures"][0]
            assert failure["status"] == "EXPIRED" and "not started by its deadline" in failure["error"]
            assert gone["deadline"] and gone["results"] == []
            deadline = time.monotonic() + 20
            while (s := client.get(single["status_url"]).json())["status"] != "EXPIRED":
                assert time.monotonic() < deadline, s
                time.sleep(0.1)
            assert s["deadline"] and s["expired_at"] and s["expired_at"] > s["deadline"] and s["result"] is None
            # The cancelled batch stayed cancelled: its chunks reached the worker and nothing ran.
            again = client.get(doomed["status_url"]).json()
            assert again["counts"] == {"REVOKED": 120}
        finally:
            worker.stop()
        # The idempotency key of an expired task is taken over: asking again gives a new task.
        again_single = client.post("/predict/async/", json={"match_id": ids[200]}, headers=own_key).json()
        assert again_single["task_id"] != single["task_id"]


def test_an_expired_id_answers_410_with_when_and_an_unknown_one_404(
    client: TestClient, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = stored_ids(stack_settings, 2)
    task = client.post("/predict/async/", json={"match_id": ids[0], "ttl_s": 600}).json()
    batch = client.post("/predict/async/batch", json={"match_ids": ids}).json()
    wait_batch(client, batch["status_url"], "DONE")
    r = redis.Redis.from_url(stack_settings.resolved_result_backend())
    # When each id was issued, from its record: the single task may be an earlier test's (same match, same key).
    issued = {
        "task": json.loads(r.get(f"matchcast:task:{task['task_id']}"))["issued_at"],
        "batch": json.loads(r.hget(f"matchcast:batch:{batch['batch_id']}", "meta"))["created_at"],
    }
    # Their records expire (Redis would do this after MATCHCAST_TASK_TTL_S); the clock moves past that TTL.
    r.delete(
        f"matchcast:task:{task['task_id']}",
        f"celery-task-meta-{task['task_id']}",
        f"matchcast:batch:{batch['batch_id']}",
    )
    ttl = stack_settings.task_ttl_s
    real = time.time
    monkeypatch.setattr("matchcast.tasks.records.time.time", lambda: real() + ttl + 5)
    for url, kind in ((task["status_url"], "task"), (batch["status_url"], "batch")):
        gone = client.get(url)
        assert gone.status_code == 410, gone.text
        body = gone.json()
        assert body["type"] == "task_gone" and kind in body["detail"]
        expired_at = datetime.fromisoformat(body["expired_at"])
        assert real() + ttl - 3600 <= expired_at.timestamp() <= real() + ttl + 3605
        # The tombstone knows the hour of issue: the body gives the window the expiry fell in, and it is true.
        after = datetime.fromisoformat(body["expired_after"])
        assert after.timestamp() <= issued[kind] + ttl <= expired_at.timestamp() + 1
        assert (expired_at - after).total_seconds() <= 3600 and "between" in body["detail"]
    assert client.get(f"/monitoring/task_status/{uuid.uuid4()}").status_code == 404  # never issued
    assert 'task_status_gone_total{kind="batch"}' in client.get("/metrics").text
    # Past the further retention (MATCHCAST_TASK_GONE_S) the tombstone is gone from view: 404 again.
    monkeypatch.setattr("matchcast.tasks.records.time.time", lambda: real() + ttl + stack_settings.task_gone_s + 7300)
    assert client.get(task["status_url"]).status_code == 404
