"""Replaying dead letters from the command line: submit the original arguments again as a new task."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from matchcast.config import ML_QUEUE, PREDICT_TASK, Settings
from matchcast.data.dead_letters import DeadLetters
from matchcast.errors import Conflict, NotFound
from matchcast.service.queue import make_celery
from matchcast.service.tracking import task_key
from matchcast.service.wiring import store_for


def replayable_payload(letters: DeadLetters, dead_letter_id: int) -> dict[str, Any]:
    """The original payload of a dead letter that may be replayed (``NotFound``/``Conflict`` otherwise)."""
    letter = letters.get(dead_letter_id)
    if letter is None:
        raise NotFound(f"no dead letter with id={dead_letter_id}")
    if letter.replayed_at is not None:
        raise Conflict(f"dead letter {dead_letter_id} was already replayed as task {letter.replay_task_id}")
    args = letter.args
    if letter.task_name != PREDICT_TASK or not (isinstance(args, list) and args and isinstance(args[0], dict)):
        raise Conflict(f"dead letter {dead_letter_id} is not a {PREDICT_TASK} task and cannot be replayed")
    payload: dict[str, Any] = args[0]
    return payload


def replay(settings: Settings, dead_letter_id: int) -> str:
    """Submit a dead letter again; returns the new task id (its status is then at the usual URL)."""
    letters = DeadLetters(store_for(settings))
    payload = replayable_payload(letters, dead_letter_id)
    task_id = str(uuid.uuid4())
    client = redis.Redis.from_url(settings.resolved_result_backend(), socket_timeout=5)
    client.set(task_key(task_id), json.dumps({"source": "replay", "issued_at": time.time()}), ex=settings.task_ttl_s)
    app = make_celery(settings)
    try:
        app.send_task(
            PREDICT_TASK, args=[payload], task_id=task_id, queue=ML_QUEUE, headers={"submitted_at": time.time()}
        )
    finally:
        app.close()
    letters.mark_replayed(dead_letter_id, task_id)
    return task_id
