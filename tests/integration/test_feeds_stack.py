"""Feeds on the real stack: a worker on ml.maintenance and a real `celery beat` read a local HTTP feed into the store;
a 500 and a malformed file keep the last good data and raise the failure metric; POST /admin/ingest end to end."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.config import Settings, settings_env
from matchcast.service.wiring import store_for
from tests.conftest import base_settings, free_port, key_headers
from tests.unit.test_feeds import BASE, FeedServer, scores

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90, logs: tuple[Path, ...] = ()) -> Any:
    """Until ``check()`` is truthy (its value), or fail naming ``what`` with the processes' last log lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(0.3)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample of the worker's metrics endpoint, or None when absent."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def server() -> Iterator[FeedServer]:
    s = FeedServer()
    try:
        yield s
    finally:
        s.close()


def start(cmd: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "matchcast", *cmd],
        env=settings_env(settings),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_beat_and_a_maintenance_worker_keep_the_store_current_from_a_feed(
    tmp_path: Path, own_redis_db: int, server: FeedServer, broker: str, request: pytest.FixtureRequest
) -> None:
    url = server.serve("/pl.csv", BASE, etag='"v1"')
    port = free_port()  # the worker's metrics
    broker_url = (
        request.getfixturevalue("fresh_vhost_url") if broker == "rabbitmq" else f"redis://127.0.0.1:6379/{own_redis_db}"
    )
    settings = base_settings(
        tmp_path / "home",
        broker_url=broker_url,
        result_backend=f"redis://127.0.0.1:6379/{own_redis_db}",  # /ready counts the heartbeats in it
        feeds=json.dumps([{"name": "pl", "url": url}]),
        feeds_interval_s=1.5,
        worker_metrics_port=port,
    )
    store = store_for(settings)
    assert store.count() == 0
    logs = (tmp_path / "worker.log", tmp_path / "beat.log")
    worker = start(
        ["worker", "--lane", "maintenance", "--concurrency", "1", "--hostname", f"feeds-{uuid.uuid4().hex[:4]}@x"],
        settings,
        logs[0],
    )
    beat = start(["beat"], settings, logs[1])
    try:
        # Beat sends ingest_feeds on ml.maintenance; the worker reads the feed into the store.
        wait_for("the feed's four results in the store", lambda: store.count(with_result=True) == 4, logs=logs)
        last = wait_for(
            "the last-success gauge", lambda: metric(port, "feed_last_success_timestamp_seconds", feed="pl")
        )
        assert last > time.time() - 120
        hits = server.routes["/pl.csv"].hits
        wait_for("a conditional read", lambda: any(h.get("If-None-Match") == '"v1"' for h in hits), logs=logs)
        assert "ingest_feeds" in logs[0].read_text() and "beat: Starting" in logs[1].read_text()
        assert (settings.home / "beat").exists()  # the schedule file lives under MATCHCAST_HOME
        good = scores(settings)

        # The feed answers 500: nothing changes, the failure is counted and /ready notes it (degraded only).
        server.routes["/pl.csv"].status, server.routes["/pl.csv"].etag = 500, None
        wait_for(
            "a counted 500", lambda: metric(port, "feed_failures_total", feed="pl", reason="http_status"), logs=logs
        )
        assert scores(settings) == good
        with TestClient(create_app(settings)) as client:
            ready = client.get("/ready").json()
        assert "feeds" not in ready["missing"] and "pl: failing since" in ready["degraded"]["feeds"]
        assert "(http_status)" in ready["degraded"]["feeds"] and "maintenance" not in ready["degraded"]

        # A malformed file: the same, with its place in the file.
        server.routes["/pl.csv"].status = 200
        server.routes["/pl.csv"].body = (BASE.replace("Arsenal,Chelsea,1,1,D", "Arsenal,Chelsea,1,one,D")).encode()
        wait_for(
            "a malformed file", lambda: metric(port, "feed_failures_total", feed="pl", reason="malformed"), logs=logs
        )
        assert scores(settings) == good
        with TestClient(create_app(settings)) as client:
            assert "pl, line 3, column FTAG" in client.get("/ready").json()["degraded"]["feeds"]

        # A good file again, with one more result: ingested, and the failure is no longer reported.
        # (With a misspelt name: its row is held back and the unknown-teams gauge says so.)
        server.routes["/pl.csv"].body = (
            BASE + "E0,30/08/2025,Arsenal,Man United,3,0,H\nE0,30/08/2025,Chelsey,Wolves,1,0,H\n"
        ).encode()
        wait_for("the new result", lambda: scores(settings).get(("Arsenal", "Man United")) == (3, 0), logs=logs)
        assert wait_for("the unknown-teams gauge", lambda: metric(port, "feed_unknown_teams", feed="pl")) == 1
        assert ("Chelsey", "Wolves") not in scores(settings)
        with TestClient(create_app(settings)) as client:
            wait_for("a /ready without feed notes", lambda: "feeds" not in client.get("/ready").json()["degraded"])
            stop(worker)  # no maintenance worker left: noted as degraded, the API stays as ready as it was
            note = wait_for("the maintenance note", lambda: client.get("/ready").json()["degraded"].get("maintenance"))
            assert "no worker is consuming ml.maintenance" in note
    finally:
        stop(beat)
        stop(worker)


def test_post_admin_ingest_end_to_end(tmp_path: Path, fresh_vhost_url: str, redis_db: int) -> None:
    settings = base_settings(
        tmp_path / "home", broker_url=fresh_vhost_url, result_backend=f"redis://127.0.0.1:6379/{redis_db}"
    )
    store = store_for(settings)
    log = tmp_path / "worker.log"
    worker = start(
        ["worker", "--lane", "maintenance", "--concurrency", "1", "--hostname", f"up-{uuid.uuid4().hex[:4]}@x"],
        settings,
        log,
    )
    try:
        with TestClient(create_app(settings), headers=key_headers(settings)) as client:
            sent = client.post("/admin/ingest?name=pl.csv", content=BASE, headers={"Content-Type": "text/csv"})
            assert sent.status_code == 202, sent.text
            status_url = sent.json()["status_url"]
            done = wait_for(
                "the upload's report",
                lambda: (s := client.get(status_url).json())["status"] in ("SUCCESS", "FAILURE") and s,
                logs=(log,),
            )
            assert done["status"] == "SUCCESS", done
            assert done["ingest"]["name"] == "pl.csv" and done["ingest"]["inserted"] == 4
            assert store.count() == 4

            # A history rewrite and an unknown name: applied and flagged in the task's status.
            again = (
                BASE.replace("Arsenal,Chelsea,1,1,D", "Arsenal,Chelsea,0,1,A") + "E0,30/08/2025,Chelsey,Wolves,1,0,H\n"
            )
            sent = client.post("/admin/ingest", content=again, headers={"Content-Type": "text/csv"})
            assert sent.status_code == 202
            done = wait_for(
                "the second report",
                lambda: (s := client.get(sent.json()["status_url"]).json())["status"] == "SUCCESS" and s,
                logs=(log,),
            )
            report = done["ingest"]
            assert [(c["was"], c["now"]) for c in report["rewritten"]] == [("1-1", "0-1")]
            assert [(u["team"], u["decision"], u["nearest"][0]) for u in report["unknown_teams"]] == [
                ("Chelsey", "held_back", "Chelsea")
            ]
            assert scores(settings)[("Arsenal", "Chelsea")] == (0, 1) and store.count() == 4

            bad = client.post(
                "/admin/ingest?name=bad.csv",
                content=BASE + "E0,31/02/2025,A,B,1,1,D\n",
                headers={"Content-Type": "text/csv"},
            )
            assert bad.status_code == 422
            assert bad.json() | {"detail": ""} == {
                "type": "ingest_error", "detail": "", "file": "bad.csv", "line": 6, "column": "Date",
            }  # fmt: skip
            wrong = client.post("/admin/ingest", content=b"{}", headers={"Content-Type": "application/json"})
            assert wrong.status_code == 415 and wrong.json()["type"] == "unsupported_media_type"
            too_big = b"x" * (settings.feed_max_bytes + 1)
            huge = client.post("/admin/ingest", content=too_big, headers={"Content-Type": "text/csv"})
            assert huge.status_code == 413 and huge.json()["type"] == "payload_too_large"
            predict_key = key_headers(settings, role="predict")
            refused = client.post("/admin/ingest", content=BASE, headers={"Content-Type": "text/csv", **predict_key})
            assert refused.status_code == 403

        # The log's retention runs on the same lane: of two old predictions of a match, the superseded one goes.
        from matchcast.data.prediction_log import write_log_rows
        from matchcast.service.prediction_log import log_row
        from matchcast.tasks.celery_app import make_celery
        from matchcast.tasks.names import PRUNE_LOG_TASK

        mid = store.all_matches()[0].match_id
        old = datetime.now(UTC) - timedelta(days=settings.prediction_log_keep_days + 1)
        served = {"match_id": mid, "model_version": "1", "probabilities": {"home": 0.5, "draw": 0.3, "away": 0.2}}
        times = (old.isoformat(), (old + timedelta(hours=1)).isoformat())
        write_log_rows(store, [log_row(served | {"predicted_at": at}, "sync") for at in times])
        celery = make_celery(settings)
        try:
            pruned = celery.send_task(PRUNE_LOG_TASK).get(timeout=60)
        finally:
            celery.close()
        assert pruned["kind"] == "prune" and pruned["deleted"] == 1, pruned
        assert "prediction_log_pruned deleted=1" in log.read_text()
    finally:
        stop(worker)


@pytest.mark.embedded
def test_up_runs_a_maintenance_worker_and_beat_that_read_the_feeds(tmp_path: Path) -> None:
    import os
    import signal

    from matchcast.service.bootstrap import train_model
    from tests.conftest import ingest_subset

    home = tmp_path / "home"
    settings = Settings(home=home)
    ingest_subset(settings, leagues=("la-liga",), first_season=21)
    train_model(settings)  # so that `up` starts at once (no first ingest and training of all the data)
    feed = tmp_path / "sp1.csv"
    feed.write_text("Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\nSP1,22/08/2026,Sevilla,Betis,,,\n")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHCAST_")}
    env.update(
        MATCHCAST_HOME=str(home),
        MATCHCAST_API_PORT=str(api_port),
        MATCHCAST_EMBEDDED_REDIS_PORT=str(free_port()),
        MATCHCAST_WORKER_METRICS_PORT="0",
        MATCHCAST_UI_PORT="0",
        MATCHCAST_FEEDS=json.dumps([{"name": "sp1", "url": str(feed)}]),
        MATCHCAST_FEEDS_INTERVAL_S="2",
    )
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "matchcast", "up"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    store = store_for(base_settings(home))
    try:
        new = ("Sevilla", "Betis")
        wait_for("the feed's fixture", lambda: new in scores(base_settings(home)), timeout=180, logs=(log,))
        ready = wait_for(
            "/ready", lambda: (r := httpx.get(f"http://127.0.0.1:{api_port}/ready", timeout=3)).status_code == 200 and r
        )
        assert ready.json()["degraded"] == {}  # the feed is read, a worker consumes ml.maintenance
        assert store.count(with_result=False) >= 1 and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = log.read_text(errors="replace")
    assert "stopping beat" in out and "stopping worker-maintenance" in out and "stopped." in out
