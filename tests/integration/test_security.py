"""Security against the real stack: the queue runs only JSON ``predict_match`` tasks, and secrets never show.

Messages are published with kombu straight onto the ``ml`` queue of the test's own RabbitMQ vhost, as anyone
with broker access could: a pickle whose unpickling would create a file, a YAML object, undecodable bytes, an
unknown task name. None may run; the worker must stay up and keep predicting.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kombu import Connection

from matchcast.api.app import create_app
from matchcast.config import Settings
from matchcast.tasks.names import ML_QUEUE, PREDICT_TASK
from tests.conftest import WorkerProcess, amqp_url, base_settings, key_headers

pytestmark = pytest.mark.integration


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file appearing would prove a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def task_headers(task_id: str, task: str = PREDICT_TASK) -> dict[str, Any]:
    """Celery message protocol 2 headers."""
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "(...)",
        "kwargsrepr": "{}",
        "origin": "attacker@test",
    }


def publish(settings: Settings, body: bytes, content_type: str, headers: dict[str, Any] | None) -> None:
    """Put a raw message on ``ml`` through the default exchange, as any broker user could."""
    with Connection(settings.resolved_broker_url(), connect_timeout=5) as conn:
        conn.Producer().publish(
            body,
            exchange="",
            routing_key=ML_QUEUE,
            content_type=content_type,
            content_encoding="binary" if content_type == "application/x-python-serialize" else "utf-8",
            headers=headers or {},
            correlation_id=(headers or {}).get("id"),
            delivery_mode=2,
            retry=True,
        )


@pytest.fixture(scope="module")
def client(stack_settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack_settings), headers=key_headers(stack_settings, "admin")) as c:
        yield c


def has_route(client: TestClient, method: str, path: str) -> bool:
    return method.lower() in client.get("/openapi.json").json()["paths"].get(path, {})


def test_the_queue_runs_only_json_predict_match(
    client: TestClient, stack_settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(CreatesFile(control)))
    assert control.exists()  # the payload is real: unpickled, it creates its file
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    ids = {kind: f"attack-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("pickle", "yaml", "garbage", "unknown")}
    dead_before = (
        client.get("/monitoring/dead_letters").json()["total"]
        if has_route(client, "get", "/monitoring/dead_letters")
        else 0
    )

    # Protocol 2: the task name in the headers, a pickled body.
    publish(
        stack_settings,
        pickle.dumps(((CreatesFile(marker),), {}, embed)),
        "application/x-python-serialize",
        task_headers(ids["pickle"]),
    )
    # Protocol 1: everything, task name included, in a pickled body.
    proto1 = {"task": PREDICT_TASK, "id": f"attack-p1-{uuid.uuid4().hex[:8]}", "args": [CreatesFile(marker)]}
    publish(stack_settings, pickle.dumps(proto1), "application/x-python-serialize", None)
    yaml_body = f"!!python/object/apply:builtins.open [{str(marker)!r}, 'w']".encode()
    publish(stack_settings, yaml_body, "application/x-yaml", task_headers(ids["yaml"]))
    publish(stack_settings, b"\x80\x04\x95garbage{{not json", "application/json", task_headers(ids["garbage"]))
    unknown_body = json.dumps([[f"touch {marker}"], {}, embed]).encode()
    publish(stack_settings, unknown_body, "application/json", task_headers(ids["unknown"], task="os.system"))

    # The worker keeps serving: a normal prediction after the attack succeeds.
    match_id = client.get("/predict/matches/", params={"limit": 1}).json()["items"][0]["match_id"]
    r = client.get(f"/predict/{match_id}")
    assert r.status_code == 200, r.text

    deadline = time.monotonic() + 30
    seen: set[str] = set()
    dead_letters = has_route(client, "get", "/monitoring/dead_letters")
    while dead_letters and time.monotonic() < deadline and not set(ids.values()) <= seen:
        page = client.get("/monitoring/dead_letters", params={"limit": 200}).json()
        seen = {item["task_id"] for item in page["items"]}
        time.sleep(0.3)
    if dead_letters:
        # Kept for inspection, never run: every refused message is a dead letter (the proto-1 one has no id).
        assert set(ids.values()) <= seen, (ids, seen)
        page = client.get("/monitoring/dead_letters", params={"limit": 200}).json()
        assert page["total"] >= dead_before + len(ids) + 1
        reasons = {item["task_id"]: item["reason"] for item in page["items"]}
        assert reasons[ids["unknown"]] in ("unknown_task", "rejected")
        assert {reasons[ids[k]] for k in ("pickle", "yaml", "garbage")} <= {"undecodable", "invalid_task", "rejected"}
    else:
        time.sleep(3)  # give the worker time to have (wrongly) run anything

    assert not marker.exists(), "a message outside JSON predict_match was executed"
    assert worker.proc.poll() is None, "the worker died"
    log = worker.log.read_text(errors="replace")
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log
    assert "os.system" in log  # refused as an unregistered task
    # ...and it still serves after handling them all.
    assert client.get(f"/predict/{match_id}").status_code == 200


SECRET = "Pw-7f3a9c-S3cret"


def test_secrets_never_show_in_ready_model_info_errors_or_logs(
    trained_home: Path, rabbit_vhost: str, redis_db: int, caplog: pytest.LogCaptureFixture
) -> None:
    """URLs with passwords everywhere: /ready, /predict/model/info, error bodies and logs never show them."""
    settings = base_settings(
        trained_home,
        # RabbitMQ refuses this password: the broker check fails, and its error text must not show it.
        broker_url=amqp_url(rabbit_vhost).replace("guest:guest@", f"guest:{SECRET}@"),
        # Redis accepts any password for its default user when it has none: the backend works with it.
        result_backend=f"redis://default:{SECRET}@127.0.0.1:6379/{redis_db}",
        sync_timeout_s=2,
    )
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings), headers=key_headers(settings, "admin")) as c:
        ready = c.get("/ready")
        assert ready.status_code == 503 and "broker" in ready.json()["missing"]
        info = c.get("/predict/model/info")
        assert info.status_code == 200 and info.json()["name"] == "matchcast"
        match_id = c.get("/predict/matches/", params={"limit": 1}).json()["items"][0]["match_id"]
        predicted = c.get(f"/predict/{match_id}")
        assert predicted.status_code in (503, 504)
        bad_key = c.get("/predict/matches/", headers={"X-API-Key": f"mc_0123456789ab_{SECRET}"})
        texts = [ready.text, info.text, predicted.text, bad_key.text, c.get("/metrics").text]
    for text in texts:
        assert SECRET not in text
    assert SECRET not in caplog.text


def test_readiness_redacts_urls_in_exception_texts(stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a client library puts in its exception, /ready shows it without the password."""
    from matchcast.tasks import cluster

    def leaky(*_: object, **__: object) -> tuple[int, int | None]:
        raise ConnectionError(f"cannot reach amqp://admin:{SECRET}@rabbit:5672// (password {SECRET})")

    monkeypatch.setattr(cluster, "queue_depth", leaky)  # what each broker node is asked, in /ready's probe
    settings = stack_settings.model_copy(update={"broker_url": f"amqp://admin:{SECRET}@127.0.0.1:1//"})
    with TestClient(create_app(settings), headers=key_headers(settings)) as c:
        body = c.get("/ready").json()
    assert body["checks"]["broker"].startswith("unavailable: ConnectionError")
    assert SECRET not in json.dumps(body) and "amqp://admin:***@rabbit" in body["checks"]["broker"]
