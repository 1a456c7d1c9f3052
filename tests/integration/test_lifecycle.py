"""A promotion reaches running workers without a restart, with no failed request during the switch;
batch submission predicts whole matchdays in vectorised chunks."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.service.bootstrap import train_model
from matchcast.service.lifecycle import promote
from matchcast.service.wiring import store_for
from tests.conftest import WorkerProcess, base_settings, ingest_subset, key_headers

pytestmark = pytest.mark.integration


def test_promotion_reaches_running_workers_and_batches_work(
    tmp_path: Path, fresh_vhost_url: str, redis_db: int
) -> None:
    home = tmp_path / "home"
    settings = base_settings(
        home,
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        model_refresh_s=1.0,
        sync_timeout_s=20,
    )
    ingest_subset(settings, leagues=("la-liga",), first_season=20)
    train_model(settings)
    worker = WorkerProcess(settings, f"life-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
    try:
        worker.wait_ready()
        with TestClient(create_app(settings), headers=key_headers(settings)) as client:
            ids = [m.match_id for m in store_for(settings).all_matches()][-400:]
            assert client.get(f"/predict/{ids[0]}").json()["model_version"] == "1"

            # Batch: a whole "matchday" and more in one call, each match with its own task id.
            batch = client.post("/predict/async/batch", json={"match_ids": ids[:250] + ids[:5]})
            assert batch.status_code == 202, batch.text
            tasks = batch.json()["tasks"]
            assert batch.json()["count"] == len(tasks) == 250  # duplicates predicted once
            deadline = time.monotonic() + 30
            pending = {t["task_id"]: t["match_id"] for t in tasks}
            while pending and time.monotonic() < deadline:
                for task_id in list(pending)[:50]:
                    s = client.get(f"/monitoring/task_status/{task_id}").json()
                    if s["status"] == "SUCCESS":
                        assert s["result"]["match_id"] == pending.pop(task_id)
                time.sleep(0.05)
            assert not pending
            assert "predict_matches" in worker.log.read_text()  # vectorised chunks, not one task per match
            missing = client.post("/predict/async/batch", json={"match_ids": [ids[0], 987654321]})
            assert missing.status_code == 404 and "987654321" in missing.json()["detail"]
            assert client.post("/predict/async/batch", json={"match_ids": list(range(1, 1002))}).status_code == 422

            # Promotion while requests keep coming: none fails, and the new version takes over.
            failures: list[int] = []
            versions: list[str] = []
            stop = threading.Event()

            def load() -> None:
                i = 0
                while not stop.is_set():
                    r = client.get(f"/predict/{ids[i % len(ids)]}")
                    i += 1
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        versions.append(r.json()["model_version"])

            t = threading.Thread(target=load)
            t.start()
            try:
                train_model(settings)  # version 2, registered as challenger
                switch = time.monotonic()
                promote(settings, force=True)
                while time.monotonic() - switch < 20 and (not versions or versions[-1] != "2"):
                    time.sleep(0.2)
                took = time.monotonic() - switch
                time.sleep(1)
            finally:
                stop.set()
                t.join()
            assert failures == []
            assert versions[-1] == "2" and "1" in versions
            assert took < 10
            assert client.get("/predict/model/info").json()["version"] == "2"
        # Each pool process switches once, when it next serves a task (at most two here).
        assert 1 <= worker.log.read_text().count("model_switched from=1 to=2") <= 2
    finally:
        worker.stop()
