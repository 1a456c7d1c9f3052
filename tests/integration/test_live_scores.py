"""The prediction log and live scores on the real stack (RabbitMQ, Redis, a real worker, an MLflow registry):
sync, async and batch predictions land in ``prediction_log``; a challenger is shadowed but never served; once the
results are ingested, ``GET /monitoring/live`` equals a recomputation made here from the log's rows and the
matches table alone."""

from __future__ import annotations

import math
import shutil
import sqlite3
import time
import uuid
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.data.ingest import bundled_files
from matchcast.service.bootstrap import ingest_files, train_model
from matchcast.service.live import live_comparison, live_gate
from matchcast.service.wiring import registry_for, store_for
from tests.conftest import AS_OF, WorkerProcess, base_settings, ingest_subset, key_headers

pytestmark = pytest.mark.integration
LEAGUE = "la-liga"


def wait_until(what: str, check: Any, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def log_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM prediction_log ORDER BY id")]


def recompute(db: Path) -> dict[str, Any]:
    """The live figures from ``prediction_log`` and ``matches`` alone, by the README's rule, in plain Python."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        matches = {r["match_id"]: dict(r) for r in conn.execute("SELECT * FROM matches")}
        log = [dict(r) for r in conn.execute("SELECT * FROM prediction_log")]
    counted: dict[tuple[str, bool], dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in log:
        m = matches[row["match_id"]]
        if m["result"] is None or m["result_at"] is None or not row["served_at"] < m["result_at"]:
            continue
        key, best = (row["model_version"], bool(row["shadow"])), counted[(row["model_version"], bool(row["shadow"]))]
        have = best.get(row["match_id"])
        if have is None or (row["served_at"], row["id"]) > (have["served_at"], have["id"]):
            best[row["match_id"]] = row
        counted[key] = best
    scored = {mid for rows in counted.values() for mid in rows}
    latest = max(date.fromisoformat(matches[i]["date"]) for i in scored)
    season = next(matches[i]["season"] for i in scored if date.fromisoformat(matches[i]["date"]) == latest)

    def baseline(m: dict[str, Any]) -> list[float]:
        counts = [1.0, 1.0, 1.0]
        for other in matches.values():
            if other["league"] == m["league"] and other["result"] and other["date"] < m["date"]:
                counts["HDA".index(other["result"])] += 1
        return [c / sum(counts) for c in counts]

    def scores(probs: list[list[float]], results: list[str]) -> dict[str, float]:
        rps = ll = brier = hits = 0.0
        for p, r in zip(probs, results, strict=True):
            o = [1.0 if r == c else 0.0 for c in "HDA"]
            rps += ((p[0] - o[0]) ** 2 + (p[0] + p[1] - o[0] - o[1]) ** 2) / 2
            ll -= math.log(p["HDA".index(r)])
            brier += sum((a - b) ** 2 for a, b in zip(p, o, strict=True))
            hits += max(range(3), key=lambda i: p[i]) == "HDA".index(r)
        n = len(results)
        return {"rps": rps / n, "log_loss": ll / n, "brier": brier / n, "accuracy": hits / n}

    out: dict[str, Any] = {"latest": latest, "season": season, "models": {}, "counted": counted}
    for key, rows in counted.items():
        ordered = sorted(rows.values(), key=lambda r: (matches[r["match_id"]]["date"], r["match_id"]))
        windows = {
            "7d": [r for r in ordered if matches[r["match_id"]]["date"] >= str(latest - timedelta(days=6))],
            "30d": [r for r in ordered if matches[r["match_id"]]["date"] >= str(latest - timedelta(days=29))],
            "season": [r for r in ordered if matches[r["match_id"]]["season"] == season],
            "last200": ordered[-200:],
        }
        out["models"][key] = {}
        for w, chosen in windows.items():
            results = [matches[r["match_id"]]["result"] for r in chosen]
            probs = [[r["p_home"], r["p_draw"], r["p_away"]] for r in chosen]
            base = [baseline(matches[r["match_id"]]) for r in chosen]
            out["models"][key][w] = (len(chosen), scores(probs, results), scores(base, results))
    # Per league, over the season: each match's served forecast that counts, whichever version served it.
    served: dict[int, dict[str, Any]] = {}
    for (_, shadow), rows in counted.items():
        for mid, row in rows.items():
            if not shadow and (mid not in served or row["served_at"] > served[mid]["served_at"]):
                served[mid] = row
    by_league: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for mid, row in served.items():
        if matches[mid]["season"] == season:
            by_league[matches[mid]["league"]].append(row)
    out["leagues"] = {}
    for league, rows in by_league.items():
        results = [matches[r["match_id"]]["result"] for r in rows]
        probs = [[r["p_home"], r["p_draw"], r["p_away"]] for r in rows]
        base = [baseline(matches[r["match_id"]]) for r in rows]
        triples = zip(probs, base, results, strict=True)
        diffs = [scores([p], [y])["rps"] - scores([b], [y])["rps"] for p, b, y in triples]
        mean = sum(diffs) / len(diffs)
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) if len(diffs) > 1 else None
        out["leagues"][league] = (len(rows), scores(probs, results), scores(base, results), mean, se)
    return out


def test_predictions_are_logged_shadowed_and_scored(tmp_path: Path, fresh_vhost_url: str, redis_db: int) -> None:
    home = tmp_path / "home"
    settings = base_settings(
        home,
        prediction_log_flush_s=0.2,  # rows reach the store quickly
        live_cache_s=0,  # every GET /monitoring/live recomputes
        live_refresh_s=0,
        model_refresh_s=1.0,  # the shadow finds the challenger within a second
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sync_timeout_s=20,
    )
    ingest_subset(settings, leagues=(LEAGUE,), first_season=22)
    assert train_model(settings).alias_set == "champion"  # version 1 serves
    assert train_model(settings).alias_set == "challenger"  # version 2 is shadowed
    store = store_for(settings)
    upcoming = store.upcoming(league=LEAGUE, date_from=AS_OF, limit=12)[1]
    ids = [m.match_id for m in upcoming]
    assert len(ids) == 12
    db = home / "matchcast.db"
    worker = WorkerProcess(settings, f"live-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
    try:
        worker.wait_ready()
        wait_until(  # by every pool process: each has a shadow of its own
            "the challenger loaded as a shadow",
            lambda: worker.log.read_text().count("shadow_loaded version=2") >= worker.concurrency,
        )
        with TestClient(create_app(settings), headers=key_headers(settings, "predict")) as client:
            served: list[dict[str, Any]] = []
            for mid in ids[:4]:  # sync
                r = client.get(f"/predict/{mid}")
                assert r.status_code == 200, r.text
                served.append(r.json())
            tasks = []
            for mid in ids[4:8]:  # async
                r = client.post("/predict/async/", json={"match_id": mid})
                assert r.status_code == 202, r.text
                tasks.append(r.json()["task_id"])
            batch = client.post("/predict/async/batch", json={"match_ids": ids[8:]})
            assert batch.status_code == 202, batch.text
            tasks += [t["task_id"] for t in batch.json()["tasks"]]
            for task_id in tasks:
                status = wait_until(
                    f"task {task_id}",
                    lambda t=task_id: (
                        (s := client.get(f"/monitoring/task_status/{t}").json())["status"] == "SUCCESS" and s
                    ),
                )
                served.append(status["result"])
            # What is served is the champion's, never the challenger's.
            assert {p["model_version"] for p in served} == {"1"}
            assert all("shadow" not in p and "challenger" not in str(p) for p in served)

            rows = wait_until(
                "every prediction and its shadow in the log", lambda: len(log_rows(db)) >= 24 and log_rows(db)
            )
            by_source = defaultdict(set)
            for row in rows:
                by_source[(row["source"], row["model_version"], bool(row["shadow"]))].add(row["match_id"])
            assert by_source[("sync", "1", False)] == set(ids[:4])
            assert by_source[("async", "1", False)] == set(ids[4:8])
            assert by_source[("batch", "1", False)] == set(ids[8:])
            for source, part in (("sync", ids[:4]), ("async", ids[4:8]), ("batch", ids[8:])):
                assert by_source[(source, "2", True)] == set(part)  # shadow rows: the challenger's version
            pred = {p["match_id"]: p for p in served}
            for row in rows:
                if not row["shadow"]:
                    p = pred[row["match_id"]]["probabilities"]
                    assert (row["p_home"], row["p_draw"], row["p_away"]) == pytest.approx(
                        (p["home"], p["draw"], p["away"])
                    )
                    assert row["feature_version"] == pred[row["match_id"]]["feature_version"]
                    assert row["feature_revision"] == pred[row["match_id"]].get("feature_revision")

            # Before any result: nothing is scored.
            before = client.get("/monitoring/live").json()
            assert before["models"] == [] and before["comparisons"] == []

            # The results arrive: the bundled season file, results not held back this time.
            season_file = next(p for p in bundled_files() if p.parent.name == LEAGUE and p.stem.endswith("2526"))
            copy = tmp_path / LEAGUE / season_file.name
            copy.parent.mkdir()
            shutil.copy(season_file, copy)
            ingest_files(settings, [copy])
            # A prediction made after its result arrived does not count (it is no forecast any more).
            assert client.get(f"/predict/{ids[0]}").status_code == 200
            wait_until("the late prediction in the log", lambda: len(log_rows(db)) >= 26)

            live = client.get("/monitoring/live")
            assert live.status_code == 200, live.text
            body = live.json()
            expected = recompute(db)
            assert body["latest_match_date"] == expected["latest"].isoformat()
            assert body["season"] == expected["season"]
            got = {(m["model_version"], m["shadow"]): m for m in body["models"]}
            assert set(got) == set(expected["models"]) == {("1", False), ("2", True)}
            scored_ids = {mid for mid in ids if store.get(mid).result is not None}  # type: ignore[union-attr]
            assert len(scored_ids) >= 8
            assert set(expected["counted"][("1", False)]) == scored_ids
            for key, windows in expected["models"].items():
                assert got[key]["role"] == ("champion" if key[0] == "1" else "challenger")
                for w, (n, model, base) in windows.items():
                    figures = got[key]["windows"][w]
                    assert figures["n"] == n
                    if n:
                        assert figures["model"] == pytest.approx(model, rel=1e-9)
                        assert figures["baseline"] == pytest.approx(base, rel=1e-9)
            assert got[("1", False)]["heldout_rps"] == pytest.approx(
                registry_for(settings).info(version="1").metrics["heldout_rps"]
            )
            # Per league: the served forecasts against the baseline, with the paired difference and its error.
            leagues = {lg["league"]: lg for lg in body["leagues"]}
            assert set(leagues) == set(expected["leagues"]) == {LEAGUE}
            for league, (n, model, base, diff, se) in expected["leagues"].items():
                got_league = leagues[league]
                assert got_league["n"] == n == len(scored_ids)
                assert got_league["model"] == pytest.approx(model, rel=1e-9)
                assert got_league["baseline"] == pytest.approx(base, rel=1e-9)
                assert got_league["rps_diff"] == pytest.approx(diff, rel=1e-9, abs=1e-12)
                assert got_league["rps_diff_se"] == pytest.approx(se, rel=1e-9)
            # Champion and challenger paired on the same matches.
            (pair,) = body["comparisons"]
            assert (pair["champion_version"], pair["challenger_version"]) == ("1", "2")
            season_pair = pair["windows"]["season"]
            assert season_pair["n"] == len(scored_ids)
            assert season_pair["rps_diff"] == pytest.approx(
                season_pair["challenger_rps"] - season_pair["champion_rps"], abs=1e-12
            )
            assert season_pair["champion_rps"] == pytest.approx(got[("1", False)]["windows"]["season"]["model"]["rps"])

            # What `matchcast promote --live` reads: the same pair; a dozen matches are too few to promote on.
            comparison = live_comparison(settings, "2")
            assert comparison is not None and comparison.windows["season"].n == len(scored_ids)
            assert "paired scored matches" in live_gate(comparison)

            # The counted predictions, through the API, as the UI reads them.
            page = client.get("/monitoring/live/predictions", params={"shadow": False, "limit": 500}).json()
            assert page["total"] == len(scored_ids)
            counted = expected["counted"][("1", False)]
            for item in page["items"]:
                row = counted[item["match_id"]]
                assert item["served_at"].startswith(row["served_at"].replace(" ", "T")[:19])
                assert item["probabilities"]["home"] == pytest.approx(row["p_home"])
            last_of_first = max(r["id"] for r in log_rows(db) if r["match_id"] == ids[0] and not r["shadow"])
            assert counted[ids[0]]["id"] < last_of_first  # the prediction served after the result is not counted

            # The gauges the alerts read.
            metrics = client.get("/metrics").text
            assert 'model_live_rps{model_version="1",window="last200"}' in metrics
            assert 'model_live_shadow_rps{model_version="2",window="season"}' in metrics
            assert 'model_heldout_rps{model_version="1"}' in metrics
    finally:
        worker.stop()
    assert "prediction log" not in worker.log.read_text()  # no row dropped or refused
