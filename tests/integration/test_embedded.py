"""``matchcast up`` with no services configured: embedded Redis, worker and API as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, reachable

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_up_serves_every_endpoint_and_stops_cleanly(tmp_path: Path) -> None:
    api_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHCAST_")}
    env.update(
        MATCHCAST_HOME=str(tmp_path / "home"),
        MATCHCAST_API_PORT=str(api_port),
        MATCHCAST_EMBEDDED_REDIS_PORT=str(redis_port),
        MATCHCAST_WORKER_METRICS_PORT="0",
        MATCHCAST_UI_PORT=str(free_port()),  # the UI is started too (tests/integration/test_ui_browser.py drives it)
    )
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "matchcast", "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/ready", timeout=3)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        output = (tmp_path / "up.log").read_text(errors="replace")
        assert ready is not None and ready.status_code == 200, output[-4000:]
        while time.monotonic() < deadline and "matchcast is up" not in output:  # printed once the UI answers too
            time.sleep(0.5)
            output = (tmp_path / "up.log").read_text(errors="replace")
        assert f"API      {base}" in output and "embedded Redis" in output, output[-4000:]
        # The first start made an admin key: printed once, kept in MATCHCAST_HOME/admin.key readable by us only.
        key_file = tmp_path / "home" / "admin.key"
        token = key_file.read_text().strip()
        assert token.startswith("mc_") and f"X-API-Key: {token}" in output
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{base}/predict/matches/").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}

        page = httpx.get(f"{base}/predict/matches/", params={"limit": 3}, headers=auth).json()
        assert page["total"] > 300  # the bundled data, results held back from the demo date
        match_id = page["items"][0]["match_id"]
        pred = httpx.get(f"{base}/predict/{match_id}", timeout=35, headers=auth).json()
        assert pred["match_id"] == match_id and pred["model_version"] == "1"
        sub = httpx.post(f"{base}/predict/async/", json={"match_id": match_id}, headers=auth).json()
        status: dict[str, object] = {}
        for _ in range(100):
            status = httpx.get(f"{base}{sub['status_url']}", headers=auth).json()
            if status["status"] == "SUCCESS":
                break
            time.sleep(0.1)
        assert status["status"] == "SUCCESS"
        assert httpx.get(f"{base}/predict/model/info", headers=auth).json()["alias"] == "champion"
        assert "prediction_requests_total" in httpx.get(f"{base}/metrics").text
        # The broker is a real Redis server speaking over TCP.
        assert reachable("127.0.0.1", redis_port)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text(errors="replace")[-3000:]
    assert "stopped." in (tmp_path / "up.log").read_text()
    assert not reachable("127.0.0.1", redis_port) and not reachable("127.0.0.1", api_port)
