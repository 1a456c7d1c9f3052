"""deploy/: the Prometheus config and alert rules pass promtool, and every query names a metric matchcast exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from matchcast import metrics
from tests.conftest import need

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "matchcast-dashboard.json"
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "delta", "histogram_quantile", "clamp_min", "vector",
    "or", "and", "unless", "on", "ignoring", "bool", "offset", "time",
}  # fmt: skip


def exported_names() -> set[str]:
    """Every series name matchcast's metrics expose, plus Prometheus's own ``up``."""
    names = {"up"}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            kind, name = obj._type, obj._name  # type: ignore[attr-defined]
            names |= {
                "counter": {f"{name}_total"},
                "gauge": {name},
                "histogram": {f"{name}_bucket", f"{name}_count", f"{name}_sum"},
            }[kind]
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, groupings, ranges and strings left out)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    tokens = re.findall(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
    return {t for t in tokens if t not in PROMQL_WORDS}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    need("promtool (Debian package prometheus)", shutil.which("promtool") is not None)
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_scrape_config() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_checks_the_rules() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_each_alert_fires_on_its_data_and_not_otherwise() -> None:
    out = promtool("test", "rules", "alerts.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_scrape_config_names_the_api_and_worker() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    workers = ["127.0.0.1:9808", "127.0.0.1:9809", "127.0.0.1:9810"]  # bulk, interactive, maintenance (`matchcast up`)
    assert jobs == {"matchcast-api": ["127.0.0.1:8000"], "matchcast-worker": workers}


def test_the_alerts_the_brief_asks_for_exist() -> None:
    by_name = {r["alert"]: str(r["expr"]) for r in alert_rules()}
    assert "prediction_timeouts_total" in by_name["MatchcastPredictionTimeouts"]
    assert "queue_depth" in by_name["MatchcastQueueBacklog"]
    assert 'up{job="matchcast-worker"}' in by_name["MatchcastNoWorker"]
    assert 'readiness_ok{check="worker"}' in by_name["MatchcastNoWorker"]
    assert "dead_letters" in by_name["MatchcastDeadLettersGrowing"]
    assert "readiness_ok" in by_name["MatchcastNotReady"]


def test_failing_stale_and_unknown_team_feeds_are_alerted_on() -> None:
    by_name = {r["alert"]: str(r["expr"]) for r in alert_rules()}
    assert "feed_failures_total" in by_name["MatchcastFeedFailing"]
    assert "feed_last_success_timestamp_seconds" in by_name["MatchcastFeedStale"]
    assert "feed_unknown_teams" in by_name["MatchcastFeedUnknownTeams"]


def test_a_result_backend_that_forgets_is_alerted_on() -> None:
    by_name = {r["alert"]: str(r["expr"]) for r in alert_rules()}
    assert "result_backend_resets_total" in by_name["MatchcastResultBackendCameBackEmpty"]
    assert "result_backend_persistent" in by_name["MatchcastResultBackendNotPersistent"]


def test_live_scores_are_alerted_on() -> None:
    by_name = {r["alert"]: str(r["expr"]) for r in alert_rules()}
    worse = by_name["MatchcastLiveWorseThanBaseline"]
    assert 'model_live_rps{window="last200"}' in worse and "model_live_baseline_rps" in worse
    drift = by_name["MatchcastLiveDrift"]
    assert 'model_live_rps{window="last200"}' in drift and "model_heldout_rps" in drift


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_queries_read_only_metrics_matchcast_exports(source: str) -> None:
    exprs = [str(r["expr"]) for r in alert_rules()] if source == "alerts" else dashboard_exprs()
    assert exprs
    known = exported_names()
    unknown = {name for e in exprs for name in metric_names(e)} - known
    assert unknown == set()


def test_the_metric_name_parser() -> None:
    expr = 'sum by (source) (rate(prediction_requests_total{source="sync"}[5m])) / clamp_min(max(queue_depth), 1e-9)'
    assert metric_names(expr) == {"prediction_requests_total", "queue_depth"}
    assert "readiness_ok" in exported_names() and "prediction_timeouts_total" in exported_names()


def test_the_dashboard_is_importable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "matchcast" and dash["title"] == "matchcast"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {"datasource"} == {v["name"] for v in dash["templating"]["list"]}
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
