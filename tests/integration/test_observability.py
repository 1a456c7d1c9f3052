"""A real Prometheus server scraping a running API and worker with deploy/prometheus's config; Flower on the broker."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from matchcast.config import Settings
from tests.conftest import WorkerProcess, api_key, free_port, need, settings_env

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def wait_for(what: str, check: Callable[[], Any], timeout: float, proc: subprocess.Popen[bytes] | None = None) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = exc
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def scraped_stack(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A worker with its metrics port, an API process, and one sync prediction and readiness check made."""
    tmp = tmp_path_factory.mktemp("observability")
    worker_port, api_port = free_port(), free_port()
    settings = stack_settings.model_copy(update={"worker_metrics_port": worker_port})
    worker = WorkerProcess(settings, f"metrics-{uuid.uuid4().hex[:6]}@localhost", tmp / "worker.log")
    log = (tmp / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "matchcast", "api", "--port", str(api_port)],
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        worker.wait_ready()
        wait_for("the API", lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 60, api)
        headers = {"X-API-Key": api_key(settings, "predict")}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            match_id = client.get("/predict/matches/", params={"limit": 1}).json()["items"][0]["match_id"]
            assert client.get(f"/predict/{match_id}").status_code == 200
            for _ in range(60):  # the worker's consumer may take a moment to show on the broker
                ready = client.get("/ready")
                if ready.status_code == 200:
                    break
                time.sleep(0.5)
            assert ready.status_code == 200, ready.text
        yield {"api_port": api_port, "worker_port": worker_port, "tmp": tmp, "settings": settings}
    finally:
        stop(api)
        log.close()
        worker.stop()


@pytest.fixture(scope="module")
def prometheus(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Prometheus server with deploy/prometheus/prometheus.yml, its targets pointed at the running stack."""
    binary = shutil.which("prometheus")
    need("prometheus (Debian package prometheus)", binary is not None)  # before the stack starts
    assert binary is not None
    scraped_stack: dict[str, Any] = request.getfixturevalue("scraped_stack")
    tmp: Path = scraped_stack["tmp"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    ports = {"matchcast-api": scraped_stack["api_port"], "matchcast-worker": scraped_stack["worker_port"]}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("Prometheus", lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, proc)
        yield url
    finally:
        stop(proc)
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_api_and_the_worker(prometheus: str) -> None:
    up = wait_for("both targets up", lambda: len(query(prometheus, "up == 1")) == 2 and query(prometheus, "up"), 60)
    assert {s["metric"]["job"] for s in up} == {"matchcast-api", "matchcast-worker"}
    requests = wait_for("prediction_requests_total", lambda: query(prometheus, "prediction_requests_total"), 30)
    assert any(s["metric"]["source"] == "sync" and float(s["value"][1]) >= 1 for s in requests), requests
    assert {s["metric"]["job"] for s in requests} == {"matchcast-api"}
    loads = wait_for("model_loads_total", lambda: query(prometheus, "model_loads_total"), 30)
    assert {s["metric"]["job"] for s in loads} == {"matchcast-worker"}
    assert sum(float(s["value"][1]) for s in loads) >= 2  # one load per prefork child, both counted
    ready = wait_for("readiness_ok", lambda: query(prometheus, "readiness_ok"), 30)
    assert {s["metric"]["check"]: s["value"][1] for s in ready} == {
        "broker": "1",
        "result_backend": "1",
        "registry": "1",
        "worker": "1",
    }


def test_prometheus_loads_the_alert_rules_and_every_dashboard_query_runs(prometheus: str) -> None:
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert {"MatchcastPredictionTimeouts", "MatchcastNoWorker", "MatchcastDeadLettersGrowing"} <= set(rules)
    wait_for("rules evaluated", lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules.values()), 5)
    assert all(r["health"] in ("ok", "unknown") for r in rules.values()), rules
    dash = json.loads((DEPLOY / "grafana" / "matchcast-dashboard.json").read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            query(prometheus, target["expr"].replace("$__rate_interval", "1m"))  # a syntax error fails here
    # A healthy stack pages for neither. One scrape that misses its 1 s timeout on a loaded machine makes an alert
    # pending (its `for` exists for that), so the check is that none stays active, pending or firing, for long.
    seen: dict[str, str] = {}

    def quiet() -> bool:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        seen.clear()
        seen.update({a["labels"]["alertname"]: a["state"] for a in alerts})
        return not {"MatchcastNoWorker", "MatchcastApiDown"} & set(seen)

    deadline = time.monotonic() + 30
    while not quiet() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not {"MatchcastNoWorker", "MatchcastApiDown"} & set(seen), seen


def test_a_graph_of_the_scraped_metrics(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Prometheus's own graph page in headless Chromium: a screenshot under test-artifacts/."""
    browser_ok = Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()
    need("chromium and chromium-driver (Debian)", browser_ok)
    need("selenium (pip)", importlib.util.find_spec("selenium") is not None)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    prometheus: str = request.getfixturevalue("prometheus")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    flags = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900")  # fmt: skip
    for flag in (*flags, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        expr = "sum by (__name__, job) ({__name__=~'prediction_requests_total|model_loads_total'})"
        driver.get(f"{prometheus}/graph?g0.expr={quote(expr)}&g0.tab=0&g0.range_input=2m")
        legend = wait_for("the graph", lambda: driver.find_elements("css selector", ".rickshaw_legend .line"), 30)
        assert len(legend) == 2, [e.text for e in legend]
        time.sleep(1)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "prometheus-graph.png"))
    finally:
        driver.quit()
    assert (ARTIFACTS / "prometheus-graph.png").stat().st_size > 10_000


def test_flower_monitors_the_broker(request: pytest.FixtureRequest) -> None:
    need("flower (pip install flower)", importlib.util.find_spec("flower") is not None)  # before the stack starts
    scraped_stack: dict[str, Any] = request.getfixturevalue("scraped_stack")
    port = free_port()
    tmp: Path = scraped_stack["tmp"]
    log = (tmp / "flower.log").open("wb")
    # Flower 2 locks its HTTP API unless told otherwise; this test reads it on the loopback interface.
    env = settings_env(scraped_stack["settings"]) | {"FLOWER_UNAUTHENTICATED_API": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "matchcast", "flower", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("Flower", lambda: httpx.get(f"{base}/healthcheck", timeout=2).text == "OK", 60, proc)
        workers = wait_for(
            "Flower sees the workers",
            lambda: httpx.get(f"{base}/api/workers", params={"refresh": "1"}, timeout=20).json(),
            60,
            proc,
        )
        assert any(name.startswith("metrics-") for name in workers), workers
        assert "flower_events_total" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        stop(proc)
        log.close()
