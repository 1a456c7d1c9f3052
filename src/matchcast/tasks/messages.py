"""Every message matchcast sends, built in one place, and the one ``enqueue`` that sends them.

The API, the worker (callbacks) and dead-letter replay all publish through ``enqueue``: each message carries a
``submitted_at`` header (the worker measures queue wait from it), goes to the queue its name belongs to, and a
broker that cannot be reached is a ``ServiceUnavailable`` naming the broker. Two optional headers leave the body
(the contract) as it is: ``deadlines`` (``{task_id: Unix time}``: a task not started by then ends ``EXPIRED``;
checked per task in a chunk) and ``batch`` (the batch a chunk belongs to).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import AMQPError
from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError

from matchcast.errors import ServiceUnavailable
from matchcast.tasks.names import (
    BULK_QUEUE,
    BULK_TASK,
    CALLBACK_TASK,
    INGEST_UPLOAD_TASK,
    INTERACTIVE_QUEUE,
    MAINTENANCE_QUEUE,
    ML_QUEUE,
    PREDICT_GROUP_TASK,
    PREDICT_TASK,
)

BROKER_ERRORS = (OperationalError, KombuError, AMQPError, RedisError, OSError)


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """One task message: its name, its one JSON argument, its queue, and what bounds its life."""

    name: str
    body: Any
    queue: str
    task_id: str | None = None
    expires: float | None = None  # seconds: after that, nobody runs it
    countdown: float | None = None  # seconds before a worker may run it
    deadlines: dict[str, float] | None = None  # task id -> Unix time: not started by then, it ends EXPIRED
    batch: str | None = None  # the batch a chunk belongs to


def predict(
    payload: dict[str, Any],
    task_id: str,
    *,
    sync: bool,
    expires: float | None = None,
    deadline: float | None = None,
) -> TaskMessage:
    """The design note's ``predict_match``: one payload; on ``ml.interactive`` for a sync caller, else ``ml``."""
    deadlines = {task_id: deadline} if deadline is not None else None
    queue = INTERACTIVE_QUEUE if sync else ML_QUEUE
    return TaskMessage(PREDICT_TASK, payload, queue, task_id, expires, deadlines=deadlines)


def predict_group(payloads: list[dict[str, Any]], task_id: str, *, expires: float) -> TaskMessage:
    """Grouped sync requests: ``{"requests": [payload, ...]}``, answered by one list in the same order."""
    return TaskMessage(PREDICT_GROUP_TASK, {"requests": payloads}, INTERACTIVE_QUEUE, task_id, expires)


def predict_chunk(
    items: list[tuple[str, int]] | list[list[Any]],
    *,
    batch: bool,
    deadlines: dict[str, float] | None = None,
    batch_id: str | None = None,
    queue: str | None = None,
    chunk_id: str | None = None,
) -> TaskMessage:
    """A chunk of stored-match tasks, ``{"items": [[task_id, match_id], ...]}``: on ``ml.bulk`` for a batch (or the
    bulk sub-queue ``queue`` its key was given: ``tasks/fairshare.py``), under ``chunk_id`` if given."""
    body = {"items": [list(i) for i in items]}
    queue = queue or (BULK_QUEUE if batch else ML_QUEUE)
    return TaskMessage(BULK_TASK, body, queue, chunk_id, deadlines=deadlines or None, batch=batch_id)


def deliver_callback(task_id: str, *, countdown: float | None = None) -> TaskMessage:
    """POST a finished task's status to its callback URL."""
    return TaskMessage(CALLBACK_TASK, task_id, ML_QUEUE, countdown=countdown or None)


def ingest_upload(name: str, content: str, league: str | None, task_id: str) -> TaskMessage:
    """An uploaded file, carried whole in the message (worker hosts share no filesystem with the API)."""
    return TaskMessage(
        INGEST_UPLOAD_TASK, {"name": name, "content": content, "league": league}, MAINTENANCE_QUEUE, task_id
    )


def enqueue(app: Celery, *messages: TaskMessage) -> None:
    """Publish ``messages`` over one producer (confirmed where the broker confirms), in order.

    ``ServiceUnavailable`` (naming the broker) if the broker cannot be reached.
    """
    try:
        with app.producer_or_acquire() as producer:
            for m in messages:
                headers: dict[str, Any] = {"submitted_at": time.time()}
                if m.deadlines:
                    headers["deadlines"] = m.deadlines
                if m.batch:
                    headers["batch"] = m.batch
                app.send_task(
                    m.name,
                    args=[m.body],
                    task_id=m.task_id,
                    queue=m.queue,
                    expires=m.expires,
                    countdown=m.countdown,
                    producer=producer,
                    headers=headers,
                )
    except BROKER_ERRORS as exc:
        raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc
