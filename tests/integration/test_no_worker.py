"""Missing parts: no worker gives 504 after the timeout (counted); no broker gives 503 at once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from tests.conftest import amqp_url, base_settings, key_headers

pytestmark = pytest.mark.integration


def timeouts(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("prediction_timeouts_total "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_504_with_no_worker(trained_home: Path, fresh_vhost_url: str, redis_db: int) -> None:
    settings = base_settings(
        trained_home,
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sync_timeout_s=1.0,
    )
    with TestClient(create_app(settings), headers=key_headers(settings)) as client:
        match_id = client.get("/predict/matches/", params={"limit": 1}).json()["items"][0]["match_id"]
        before = timeouts(client)  # the counter is per process: other tests may have counted some already
        started = time.monotonic()
        r = client.get(f"/predict/{match_id}")
        elapsed = time.monotonic() - started
        assert r.status_code == 504, r.text
        assert r.json()["type"] == "prediction_timeout" and "1 s" in r.json()["detail"]
        assert 1.0 <= elapsed < 5.0
        assert timeouts(client) == before + 1
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["missing"] == ["worker"]
        # Async work is still accepted: it waits in the queue for a worker. (A key of its own: the automatic one
        # would be claimed in the session's shared Redis database for a task no worker of the session will run.)
        own_key = {"Idempotency-Key": f"no-worker-{uuid.uuid4().hex}"}
        assert client.post("/predict/async/", json={"match_id": match_id}, headers=own_key).status_code == 202


def test_503_when_the_broker_refuses(trained_home: Path, redis_db: int) -> None:
    settings = base_settings(
        trained_home,
        broker_url=amqp_url(f"matchcast-missing-{uuid.uuid4().hex[:6]}"),
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sync_timeout_s=5.0,
    )
    with TestClient(create_app(settings), headers=key_headers(settings)) as client:
        match_id = client.get("/predict/matches/", params={"limit": 1}).json()["items"][0]["match_id"]
        r = client.get(f"/predict/{match_id}")
        assert r.status_code == 503, r.text
        assert r.json()["missing"] == ["broker"] and r.headers["retry-after"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and "broker" in ready.json()["missing"]


def test_ready_names_a_lost_node_of_a_failover_list_and_exports_it(
    trained_home: Path, fresh_vhost_url: str, redis_db: int
) -> None:
    from tests.conftest import free_port

    dead = free_port()  # nothing listens there: a broker node that is down
    vhost = fresh_vhost_url.rsplit("/", 1)[1]
    settings = base_settings(
        trained_home,
        broker_url=f"{fresh_vhost_url};amqp://guest:guest@127.0.0.1:{dead}/{vhost}",
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        readiness_timeout_s=2.0,
    )
    with TestClient(create_app(settings), headers=key_headers(settings)) as client:
        body = client.get("/ready").json()
        assert "broker" not in body["missing"] and "1 of 2 nodes reachable" in body["checks"]["broker"], body
        assert f"broker 127.0.0.1:{dead}" in body["degraded"] and "guest" not in str(body)
        up = {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("broker_node_up{")
        }
        assert up["127.0.0.1:5672"] == 1.0 and up[f"127.0.0.1:{dead}"] == 0.0, up
