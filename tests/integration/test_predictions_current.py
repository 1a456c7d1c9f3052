"""Predictions stay current (issue 14): after an ingest changes an upcoming match's features, a sync request and an
async resubmission give a new prediction, made from the new features and saying so; a played match's prediction
carries its result. Real worker, RabbitMQ vhost of the test's own, Redis, MLflow registry, a home of its own."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.config import Settings
from matchcast.data.ingest import bundled_files
from matchcast.service.bootstrap import ingest_files
from matchcast.service.wiring import store_for
from tests.conftest import WorkerProcess, base_settings, key_headers

pytestmark = pytest.mark.integration
REFRESH_S = 0.5
SEASON = [p for p in bundled_files() if p.parent.name == "premier-league" and p.name == "season-2526.csv"]


@pytest.fixture
def own_settings(
    trained_home: Path, fresh_vhost_url: str, redis_db: int, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """A copy of the trained home (this module ingests into it) on a vhost of its own."""
    home = tmp_path_factory.mktemp("current-home")
    shutil.copytree(trained_home, home, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.db*", "prometheus"))
    for name in ("matchcast.db", "mlflow.db"):
        with sqlite3.connect(trained_home / name) as src, sqlite3.connect(home / name) as dst:
            src.backup(dst)
    return base_settings(
        home,
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sync_timeout_s=20,
        feature_revisions_refresh_s=REFRESH_S,
    )


@pytest.fixture
def client(own_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    log = tmp_path_factory.mktemp("current-logs") / "worker.log"
    worker = WorkerProcess(own_settings, f"test-current-{uuid.uuid4().hex[:6]}@localhost", log)
    try:
        worker.wait_ready()
        with TestClient(create_app(own_settings), headers=key_headers(own_settings, "predict")) as c:
            yield c
    finally:
        worker.stop()


def finished(client: TestClient, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/monitoring/task_status/{task_id}").json()
        if status["status"] == "SUCCESS":
            return dict(status["result"])
        assert status["status"] in ("PENDING", "STARTED"), status
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s")


def submit(client: TestClient, match_id: int) -> str:
    r = client.post("/predict/async/", json={"match_id": match_id})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def first_upcoming(client: TestClient, day: str) -> dict[str, Any]:
    page = client.get("/predict/matches/", params={"league": "premier-league", "from": day, "limit": 1}).json()
    return dict(page["items"][0])


def test_an_ingest_makes_new_predictions_of_the_matches_it_changed(client: TestClient, own_settings: Settings) -> None:
    later = first_upcoming(client, "2026-04-15")  # its features change when the results of 1-10 April come in
    played = first_upcoming(client, "2026-04-01")  # gets its result
    mid = later["match_id"]

    sync_before = client.get(f"/predict/{mid}").json()
    assert sync_before["feature_revision"] and sync_before["result"] is None
    assert date.fromisoformat(sync_before["features_as_of"]) < date(2026, 4, 1)
    task_before = submit(client, mid)
    async_before = finished(client, task_before)
    assert async_before["feature_revision"] == sync_before["feature_revision"]
    assert submit(client, mid) == task_before  # same features: the same task comes back

    outcome = ingest_files(own_settings, SEASON, as_of=date(2026, 4, 11))
    assert outcome.report.updated > 0 and outcome.features_changed > 0
    stored = store_for(own_settings).get_with_features(mid)
    assert stored is not None and stored.revision != sync_before["feature_revision"]
    assert stored.as_of is not None and date(2026, 4, 1) <= stored.as_of <= date(2026, 4, 10)

    # Sync reads the store per request: the new features at once.
    sync_after = client.get(f"/predict/{mid}").json()
    assert (sync_after["feature_revision"], sync_after["features_as_of"]) == (stored.revision, str(stored.as_of))
    assert sync_after["probabilities"] != sync_before["probabilities"]

    # Async: a new task once the API has read the new revision (within its refresh interval), never the stale one.
    deadline = time.monotonic() + 10 * REFRESH_S + 5
    task_after = submit(client, mid)
    while task_after == task_before and time.monotonic() < deadline:
        time.sleep(REFRESH_S / 5)
        task_after = submit(client, mid)
    assert task_after != task_before, "the resubmission still returns the task made from the old features"
    async_after = finished(client, task_after)
    assert (async_after["feature_revision"], async_after["features_as_of"]) == (stored.revision, str(stored.as_of))
    assert async_after["probabilities"] == pytest.approx(sync_after["probabilities"])
    assert submit(client, mid) == task_after

    # A played match: still the pre-match forecast, and it says what happened.
    row = store_for(own_settings).get(played["match_id"])
    assert row is not None and row.result is not None
    body = client.get(f"/predict/{played['match_id']}").json()
    assert body["result"] == {"home_goals": row.home_goals, "away_goals": row.away_goals, "result": row.result}
    assert date.fromisoformat(body["features_as_of"]) < row.date
    done = finished(client, submit(client, played["match_id"]))
    assert done["result"] == body["result"] and done["feature_revision"] == body["feature_revision"]

    # The batch table says what each prediction was made from, and the score once played.
    r = client.post("/predict/async/batch", json={"match_ids": [mid, played["match_id"]]})
    assert r.status_code == 202, r.text
    for task in r.json()["tasks"]:
        finished(client, task["task_id"])
    lines = client.get(r.json()["status_url"], params={"format": "csv"}).text.splitlines()
    cells = {
        row["match_id"]: row for row in (dict(zip(lines[0].split(","), x.split(","), strict=True)) for x in lines[1:])
    }
    assert (cells[str(mid)]["feature_revision"], cells[str(mid)]["features_as_of"]) == (
        stored.revision,
        str(stored.as_of),
    )
    assert cells[str(mid)]["result"] == ""
    assert cells[str(played["match_id"])]["result"] == row.result
    assert cells[str(played["match_id"])]["home_goals"] == str(row.home_goals)
