"""Retraining with its gate against a real MLflow registry, and ``retrain_model`` through a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from matchcast.config import Settings, settings_env
from matchcast.service.prediction import PredictionService
from matchcast.service.retrain import DECISION_FILE, retrain
from matchcast.service.training import build_dataset, train
from matchcast.service.wiring import registry_for, store_for
from tests.conftest import WorkerProcess, base_settings, ingest_subset

pytestmark = pytest.mark.integration


def degraded_champion(settings: Settings) -> str:
    """Two leagues from 2020/21, and a champion trained with almost no freedom (close to outcome frequencies)."""
    ingest_subset(settings, leagues=("premier-league", "serie-a"), first_season=20)
    return train(store_for(settings), registry_for(settings), c=1e-5, alias="champion").version


def test_retrain_promotes_a_better_challenger_and_records_every_decision(tmp_path: Path) -> None:
    import mlflow

    settings = base_settings(tmp_path)
    first = degraded_champion(settings)
    reg = registry_for(settings)
    serving = PredictionService(store_for(settings), reg, "champion")
    assert serving.model.version == first

    # The retrain reads the feature rows the store serves: the same values as computing them afresh.
    store = store_for(settings)
    rows = {mid: values for mid, _, values in store.feature_table()}
    computed, read = build_dataset(store), build_dataset(store, stored=rows)
    assert np.array_equal(computed.x, read.x) and np.array_equal(computed.y, read.y) and len(read.y) > 3000
    shifted = {mid: [v + 1.0 for v in values] for mid, values in rows.items()}
    assert np.allclose(build_dataset(store, stored=shifted).x, computed.x + 1.0)  # read, not recomputed
    rows.pop(next(iter(rows)))
    assert np.array_equal(build_dataset(store, stored=rows).x, computed.x)  # rows missing: computed afresh

    won = retrain(settings)
    rec = won.record
    assert rec["decision"] == "promoted" and won.promoted
    assert rec["champion_version"] == first and rec["serving_version"] == rec["challenger_version"] != first
    assert rec["rps_diff"] + rec["rps_diff_se"] < 0 and rec["challenger_rps"] < rec["champion_rps"]
    assert rec["window"]["n"] >= 100 and len(rec["window"]["weeks"]) == settings.retrain_weeks
    assert rec["window"]["weeks"][-1][1] == rec["training"]["window_end"]  # the window ends on the latest result
    assert (reg.version_of("champion"), reg.version_of("challenger")) == (rec["challenger_version"], None)
    # Recorded in MLflow: metrics and tags on the challenger's run, tags on its version, the decision document.
    info = reg.info(version=rec["challenger_version"])
    assert info.tags["gate_decision"] == "promoted" and info.tags["promoted_from"] == first
    assert info.metrics["gate_rps_diff"] == pytest.approx(rec["rps_diff"])
    assert info.metrics["gate_champion_rps"] == pytest.approx(rec["champion_rps"])
    assert info.metrics["gate_challenger_rps"] == pytest.approx(rec["challenger_rps"])
    assert info.metrics["gate_promoted"] == 1.0
    mlflow.set_tracking_uri(settings.resolved_tracking_uri())
    doc = mlflow.artifacts.load_dict(f"runs:/{info.run_id}/{DECISION_FILE}")
    assert doc == json.loads(json.dumps(rec))
    # A serving process switches at its next refresh, without a restart.
    switched = serving.refresh(0)
    assert switched is not None and serving.model.version == rec["challenger_version"]

    # Nothing new since, through the command line: the same recipe on the same data forecasts the same; not
    # better, so not promoted.
    done = subprocess.run(
        [sys.executable, "-m", "matchcast", "retrain", "--weeks", "7"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rejected" in done.stdout and "paired difference" in done.stdout
    kept = reg.version_of("challenger")  # kept for the shadow to watch
    assert kept is not None and kept != rec["challenger_version"]
    assert reg.version_of("champion") == rec["challenger_version"]
    rejected = reg.info(version=kept)
    assert rejected.tags["gate_decision"] == "rejected" and rejected.metrics["gate_promoted"] == 0.0
    assert rejected.tags["gate_champion_version"] == rec["challenger_version"]
    t = mlflow.artifacts.load_dict(f"runs:/{rejected.run_id}/{DECISION_FILE}")
    assert t["decision"] == "rejected" and t["rps_diff"] == 0.0 and t["rps_diff_se"] == 0.0
    assert len(t["window"]["weeks"]) == 7 and t["serving_version"] == rec["challenger_version"]
    assert t["window"]["n"] < rec["window"]["n"] and f"rejected: {t['reason']}" in done.stdout
    assert f"version {kept}" in done.stdout and f"{t['challenger_rps']:.5f}" in done.stdout
    assert serving.refresh(0) is None


def test_retrain_model_runs_on_the_maintenance_queue_of_a_real_worker(
    tmp_path: Path, fresh_vhost_url: str, redis_db: int
) -> None:
    from matchcast.tasks.celery_app import make_celery
    from matchcast.tasks.names import MAINTENANCE_QUEUE, PREDICT_TASK, RETRAIN_TASK

    settings = base_settings(
        tmp_path,
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        model_refresh_s=0.5,
        retrain_time_limit_s=900,
    )
    first = degraded_champion(settings)
    match_id = store_for(settings).upcoming(limit=1)[1][0].match_id
    worker = WorkerProcess(settings, "retrain-worker@localhost", tmp_path / "worker.log", concurrency=1)
    client = make_celery(settings)
    try:
        worker.wait_ready(timeout=120)
        before = client.send_task(PREDICT_TASK, args=[{"match_id": match_id}]).get(timeout=60)
        assert before["model_version"] == first
        sent = client.send_task(RETRAIN_TASK, args=[{"weeks": 6}])
        assert client.amqp.router.route({}, RETRAIN_TASK, (), {})["queue"].name == MAINTENANCE_QUEUE
        record = sent.get(timeout=900)
        assert record["decision"] == "promoted" and record["champion_version"] == first
        assert len(record["window"]["weeks"]) == 6
        assert registry_for(settings).version_of("champion") == record["challenger_version"]
        log = worker.log.read_text(errors="replace")
        assert "retrain_decision decision=promoted" in log
        # The same worker serves the promoted version without a restart.
        deadline = time.monotonic() + 60
        while True:
            after = client.send_task(PREDICT_TASK, args=[{"match_id": match_id}]).get(timeout=60)
            if after["model_version"] == record["challenger_version"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert after["model_version"] == record["challenger_version"]
        bad = client.send_task(RETRAIN_TASK, args=[{"weeks": 0}])
        with pytest.raises(Exception, match="weeks must be"):
            bad.get(timeout=60)
        # While another retrain (here: a lease taken as `matchcast retrain` on another host would) runs, the
        # scheduled one is skipped and says why; the champion stays.
        store_for(settings).take_lease("retrain", "ops-host:77:cli", 600)
        skipped = client.send_task(RETRAIN_TASK).get(timeout=60)
        assert skipped["decision"] == "skipped" and "ops-host:77:cli" in skipped["reason"], skipped
        assert registry_for(settings).version_of("champion") == record["challenger_version"]
    finally:
        worker.stop()
        client.close()
