"""The task protocol from outside: any client that speaks Celery's JSON protocol reaches a real worker.

The design note's ``predict_match`` with ``{"match_id": N}`` on ``ml`` is sent as a raw message (no matchcast code
on the sending side); so is the grouped envelope ``predict_match_group`` on ``ml.interactive``. Results are read
from the result backend as Celery stores them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection

from matchcast.config import Settings
from matchcast.data.store import MatchStore
from matchcast.tasks.names import INTERACTIVE_QUEUE, ML_QUEUE, PREDICT_GROUP_TASK, PREDICT_TASK
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.integration


def send_raw(settings: Settings, task: str, body: Any, queue: str) -> str:
    """Publish one Celery protocol-2 JSON message by hand to ``queue`` (through the ``ml`` exchange)."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0, "argsrepr": "(...)"}
    payload = json.dumps([[body], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    with Connection(settings.resolved_broker_url(), connect_timeout=5) as conn:
        conn.Producer().publish(
            payload,
            exchange=ML_QUEUE,
            routing_key=queue,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            correlation_id=task_id,
            delivery_mode=2,
            retry=True,
        )
    return task_id


def result_of(settings: Settings, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """Celery's result record of ``task_id`` once it is final."""
    client = redis.Redis.from_url(settings.resolved_result_backend())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = client.get(f"celery-task-meta-{task_id}")
        if raw:
            meta: dict[str, Any] = json.loads(raw)
            if meta["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                return meta
        time.sleep(0.1)
    raise AssertionError(f"no final result for {task_id} within {timeout} s")


@pytest.fixture(scope="module")
def match_ids(stack_settings: Settings) -> list[int]:
    _, rows = MatchStore(stack_settings.resolved_database_url()).upcoming(limit=2, offset=0)
    return [r.match_id for r in rows]


def test_design_note_predict_match_on_ml(stack_settings: Settings, worker: WorkerProcess, match_ids: list[int]) -> None:
    meta = result_of(stack_settings, send_raw(stack_settings, PREDICT_TASK, {"match_id": match_ids[0]}, ML_QUEUE))
    assert meta["status"] == "SUCCESS"
    assert meta["result"]["match_id"] == match_ids[0]
    assert sum(meta["result"]["probabilities"].values()) == pytest.approx(1.0)


def test_grouped_envelope_answers_each_request_in_order(
    stack_settings: Settings, worker: WorkerProcess, match_ids: list[int]
) -> None:
    requests = [{"match_id": match_ids[1]}, {"match_id": 987654321}, {"match_id": match_ids[0]}]
    task_id = send_raw(stack_settings, PREDICT_GROUP_TASK, {"requests": requests}, INTERACTIVE_QUEUE)
    meta = result_of(stack_settings, task_id)
    assert meta["status"] == "SUCCESS"
    first, unknown, last = meta["result"]
    assert first["prediction"]["match_id"] == match_ids[1]
    assert last["prediction"]["match_id"] == match_ids[0]
    assert unknown == {"error": "MatchNotFound", "detail": "no match with match_id=987654321"}


def test_each_name_has_one_contract(stack_settings: Settings, worker: WorkerProcess, match_ids: list[int]) -> None:
    """A list sent as ``predict_match``, or a bare list as a group, is refused, not guessed at."""
    as_list = result_of(stack_settings, send_raw(stack_settings, PREDICT_TASK, [{"match_id": match_ids[0]}], ML_QUEUE))
    bare = result_of(stack_settings, send_raw(stack_settings, PREDICT_GROUP_TASK, [{"match_id": 1}], INTERACTIVE_QUEUE))
    for meta in (as_list, bare):  # refused (and then dead-lettered as rejected: the record may say either)
        assert meta["status"] == "FAILURE" and "InvalidInput" in json.dumps(meta["result"])
