"""A live season, the whole loop, on the real stack: beat, both prediction lanes and the maintenance lane, the API
as a process of its own, RabbitMQ, Redis, and the season replay's HTTP feed server.

A replayed week arrives through the feeds; the features of the upcoming matches it touches change; a sync request
and an async resubmission give new predictions with the new ``features_as_of``; the week's forecasts are scored
in ``GET /monitoring/live``, whose figures equal a recomputation from the prediction log; the scheduled retrain
and its gate run and are recorded; a malformed feed file and a feed that answers 500 keep the last good data and
raise the failure metric."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from matchcast.data.replay import etag_of, season_files
from matchcast.service.replay import ReplayFeeds, serve
from matchcast.service.wiring import registry_for
from tests.conftest import AS_OF, ApiProcess, api_key, base_settings, free_port
from tests.integration.test_feeds_stack import metric, start, stop, wait_for
from tests.integration.test_live_scores import recompute
from tests.unit.test_feeds import FeedServer

pytestmark = pytest.mark.integration
LEAGUES = ("premier-league", "serie-a")  # the leagues of the session's trained home
WEEK_END = AS_OF + timedelta(days=7)  # the replay publishes the results of the week before this day


def _task_result(client: httpx.Client, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/monitoring/task_status/{task_id}").json()
        return body if body["status"] == "SUCCESS" else None

    return wait_for(f"task {task_id}", done, timeout=120)["result"]  # type: ignore[no-any-return]


def _upcoming(client: httpx.Client, first: date, last: date, league: str | None = None) -> list[int]:
    params: dict[str, str | int] = {"from": first.isoformat(), "to": last.isoformat(), "limit": 200}
    if league:
        params["league"] = league
    r = client.get("/predict/matches/", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] <= 200
    return [m["match_id"] for m in body["items"]]


def test_a_replayed_week_flows_through_feeds_forecasts_scores_and_the_retrain_gate(
    trained_home: Path, tmp_path: Path, fresh_vhost_url: str, redis_db: int
) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)  # the session's home stays as it is
    seasons = {lg: s for lg, s in season_files("2025/26").items() if lg in LEAGUES}
    feeds = ReplayFeeds(seasons, AS_OF)
    replay = serve(feeds, "127.0.0.1", 0)
    flaky = FeedServer()
    pl = seasons["premier-league"]
    # A feed that is good at first (matches the store holds already, unchanged), then answers 500.
    flaky_body = b"".join(pl.render(AS_OF).splitlines(keepends=True)[:11])
    flaky_url = flaky.serve("/flaky.csv", flaky_body, etag='"f1"')
    base = f"http://127.0.0.1:{replay.server_address[1]}"
    feed_list = [{"name": f"replay-{lg}", "url": f"{base}/{lg}.csv", "league": lg} for lg in LEAGUES]
    feed_list.append({"name": "flaky", "url": flaky_url, "league": "premier-league"})
    maintenance_port = free_port()
    settings = base_settings(
        home,
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sync_timeout_s=30,
        feeds=json.dumps(feed_list),
        feeds_interval_s=2.0,
        feature_revisions_refresh_s=1.0,
        prediction_log_flush_s=0.2,
        live_cache_s=0,
        live_refresh_s=0,
        retrain_every_s=90.0,  # the first scheduled retrain comes 90 s after beat starts
        retrain_weeks=2,
        retrain_from=date(2023, 7, 1),  # a short training window: the gate is what is tested
        model_refresh_s=2.0,
    )
    headers = {"X-API-Key": api_key(settings, "admin")}
    logs = {name: tmp_path / f"{name}.log" for name in ("interactive", "bulk", "maintenance", "beat", "api")}
    tag = uuid.uuid4().hex[:4]
    procs = [
        start(
            ["worker", "--lane", "interactive", "--concurrency", "1", "--hostname", f"i-{tag}@x"],
            settings,
            logs["interactive"],
        ),
        start(["worker", "--lane", "bulk", "--concurrency", "1", "--hostname", f"b-{tag}@x"], settings, logs["bulk"]),
        start(
            ["worker", "--lane", "maintenance", "--concurrency", "1", "--hostname", f"m-{tag}@x"],
            settings.model_copy(update={"worker_metrics_port": maintenance_port}),
            logs["maintenance"],
        ),
        start(["beat"], settings, logs["beat"]),
    ]
    api = ApiProcess(settings, logs["api"])
    all_logs = tuple(logs.values())
    try:
        api.wait_healthy(120)
        client = httpx.Client(base_url=api.base, headers=headers, timeout=60)
        wait_for("a ready stack", lambda: client.get("/ready").status_code == 200, timeout=240, logs=all_logs)

        # Before the week: forecasts of its matches, and of an upcoming match after it.
        week = _upcoming(client, AS_OF, WEEK_END - timedelta(days=1))
        assert week
        league = client.get(f"/predict/matches/{week[0]}").json()["league"]  # a league that plays this week
        later = _upcoming(client, WEEK_END, WEEK_END + timedelta(days=13), league)
        assert later
        target = later[0]
        before = client.get(f"/predict/{target}").json()
        first = client.post("/predict/async/", json={"match_id": target}).json()["task_id"]
        assert _task_result(client, first)["feature_revision"] == before["feature_revision"]
        batch = client.post("/predict/async/batch", json={"match_ids": week})
        assert batch.status_code == 202, batch.text
        status_url = batch.json()["status_url"]
        wait_for("the week's forecasts", lambda: client.get(status_url).json()["status"] == "DONE", timeout=180)

        # The week's results are published; beat reads them in through the maintenance lane.
        feeds.advance(WEEK_END)
        wait_for(
            "the week's results in the store",
            lambda: not _upcoming(client, AS_OF, WEEK_END - timedelta(days=1)),
            timeout=240,
            logs=all_logs,
        )

        # The upcoming match's features changed: sync and async give new predictions made from them.
        # (the ingest commits the matches, then its feature refresh commits the features: wait for the second)
        after = wait_for(
            "the refreshed features",
            lambda: (
                (p := client.get(f"/predict/{target}").json())["feature_revision"] != before["feature_revision"] and p
            ),
            timeout=60,
            logs=all_logs,
        )
        assert date.fromisoformat(before["features_as_of"]) < AS_OF <= date.fromisoformat(after["features_as_of"])
        resubmitted = wait_for(
            "a new task for the resubmission",
            lambda: (t := client.post("/predict/async/", json={"match_id": target}).json()["task_id"]) != first and t,
            timeout=30,
        )
        again = _task_result(client, resubmitted)
        assert (again["feature_revision"], again["features_as_of"]) == (
            after["feature_revision"],
            after["features_as_of"],
        )
        played = client.get(f"/predict/{week[0]}").json()
        assert played["result"] is not None and date.fromisoformat(played["features_as_of"]) < date.fromisoformat(
            played["date"]
        )

        # The week is scored; the figures are those of the log, recomputed here.
        def scored() -> dict[str, Any] | None:
            body = client.get("/monitoring/live").json()
            return body if body["models"] else None

        live = wait_for("live scores", scored, timeout=60)
        expected = recompute(home / "matchcast.db")
        got = {(m["model_version"], m["shadow"]): m for m in live["models"]}
        assert set(got) == set(expected["models"])
        counted = {mid for rows in expected["counted"].values() for mid in rows}
        assert set(week) <= counted
        for key, windows in expected["models"].items():
            for w, (n, model, base_scores) in windows.items():
                assert got[key]["windows"][w]["n"] == n
                if n:
                    assert got[key]["windows"][w]["model"] == pytest.approx(model, rel=1e-9)
                    assert got[key]["windows"][w]["baseline"] == pytest.approx(base_scores, rel=1e-9)

        # A feed that answers 500 and a malformed file change nothing and raise the failure metric.
        stored_before = client.get("/predict/matches/", params={"limit": 1}).json()["total"]
        next_week = _upcoming(client, WEEK_END, WEEK_END + timedelta(days=6), "serie-a")
        flaky.routes["/flaky.csv"].status = 500
        flaky.routes["/flaky.csv"].etag = None
        good = feeds.file
        rows = seasons["serie-a"].render(WEEK_END + timedelta(days=7)).splitlines(keepends=True)
        rows[5] = rows[5].replace(b"2025-", b"20x5-", 1)  # a date that is none, line 6
        broken = b"".join(rows)
        feeds.file = lambda lg: (
            (broken, etag_of(broken), "Mon, 01 Jun 2026 00:00:00 GMT") if lg == "serie-a" else good(lg)
        )  # type: ignore[method-assign]
        wait_for(
            "the 500 counted",
            lambda: metric(maintenance_port, "feed_failures_total", feed="flaky", reason="http_status"),
            logs=all_logs,
        )
        wait_for(
            "the malformed file counted",
            lambda: metric(maintenance_port, "feed_failures_total", feed="replay-serie-a", reason="malformed"),
            logs=all_logs,
        )
        assert _upcoming(client, WEEK_END, WEEK_END + timedelta(days=6), "serie-a") == next_week
        assert client.get("/predict/matches/", params={"limit": 1}).json()["total"] == stored_before
        ready = client.get("/ready")
        assert ready.status_code == 200 and "flaky" in ready.json()["degraded"]["feeds"]

        # The scheduled retrain ran, its gate decided, and the decision is in MLflow.
        line = wait_for(
            "the retrain's decision",
            lambda: re.search(r"retrain_decision decision=(\w+) challenger=(\d+)", logs["maintenance"].read_text()),
            timeout=600,
            logs=all_logs,
        )
        decision, version = line.group(1), line.group(2)
        registry = registry_for(settings)
        info = wait_for(  # the challenger, as the gate recorded it in MLflow (just after the log line)
            "the gate's record", lambda: (i := registry.info(version=version)).tags.get("gate_decision") and i
        )
        assert decision in ("promoted", "rejected") and info.tags["gate_decision"] == decision
        assert {"gate_challenger_rps", "gate_champion_rps", "gate_rps_diff", "gate_rps_diff_se"} <= set(info.metrics)
        assert "Sending due task retrain-model" in logs["beat"].read_text()
    finally:
        api.close()
        for proc in procs:
            stop(proc)
        replay.shutdown()
        replay.server_close()
        flaky.close()
