"""Replaying a dead letter: its original ``predict_match`` payload, submitted again as a new task."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from matchcast.config import Settings
from matchcast.data.dead_letters import DeadLetters
from matchcast.errors import Conflict, NotFound
from matchcast.tasks.backend_client import ReplicaWait, async_backend_client
from matchcast.tasks.celery_app import make_celery
from matchcast.tasks.messages import enqueue, predict
from matchcast.tasks.names import PREDICT_TASK
from matchcast.tasks.records import TaskRecords


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


def replay(settings: Settings, letters: DeadLetters, dead_letter_id: int) -> str:
    """Submit a dead letter again from outside the API (the CLI); returns the new task id."""
    payload = replayable_payload(letters, dead_letter_id)
    task_id = str(uuid.uuid4())
    app = make_celery(settings, publisher=True)

    async def send() -> None:
        client = async_backend_client(settings, socket_timeout=5)
        try:
            records = TaskRecords(client, settings.task_ttl_s, wait=ReplicaWait.of(settings))
            await records.issue(
                [task_id], "replay", lambda: asyncio.to_thread(enqueue, app, predict(payload, task_id, sync=False))
            )
        finally:
            await client.aclose()

    try:
        asyncio.run(send())
    finally:
        app.close()
    letters.mark_replayed(dead_letter_id, task_id)
    return task_id
