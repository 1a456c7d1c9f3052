"""Issued task ids and worker heartbeats, kept in the result backend's Redis with TTLs."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from matchcast.config import redact_text
from matchcast.schemas import TaskStatus

TASK_KEY = "matchcast:task:"
WORKER_KEY = "matchcast:worker:"
RESULT_KEY = "celery-task-meta-"
CANCEL_KEY = "matchcast:cancel:"
CALLBACK_KEY = "matchcast:callback:"
IDEMPOTENCY_KEY = "matchcast:idem:"


def task_key(task_id: str) -> str:
    """Redis key recording that ``task_id`` was issued."""
    return TASK_KEY + task_id


def callback_key(task_id: str) -> str:
    """Redis key holding a task's completion callback: its URL and delivery attempts."""
    return CALLBACK_KEY + task_id


def error_text(meta: dict[str, Any]) -> str:
    """A one-line reason from a Celery failure record (URL passwords and API keys masked)."""
    res = meta.get("result")
    if isinstance(res, dict) and "exc_type" in res:
        msg = res.get("exc_message")
        if isinstance(msg, list | tuple):
            msg = " ".join(str(m) for m in msg)
        return redact_text(f"{res['exc_type']}: {msg}")
    return redact_text(str(res))


def exc_type_of(meta: dict[str, Any]) -> str | None:
    """The exception type a Celery failure record names."""
    res = meta.get("result")
    return str(res.get("exc_type")) if isinstance(res, dict) and "exc_type" in res else None


def status_of(task_id: str, meta: dict[str, Any] | None) -> TaskStatus:
    """A task's status from its Celery result record (None: not started yet)."""
    if meta is None:
        return TaskStatus(task_id=task_id, status="PENDING")
    state = meta.get("status", "PENDING")
    if state == "SUCCESS":  # a grouped sync message's result is a list, read by the API that sent it
        result: Any = meta.get("result")
        if not isinstance(result, dict):
            result = None
        return TaskStatus(task_id=task_id, status="SUCCESS", result=result)
    if state == "FAILURE" and exc_type_of(meta) == "DeadLettered":
        return TaskStatus(task_id=task_id, status="DEAD_LETTERED", error=error_text(meta))
    if state in ("FAILURE", "REVOKED", "RETRY"):
        return TaskStatus(task_id=task_id, status=state, error=error_text(meta))
    return TaskStatus(task_id=task_id, status="STARTED" if state == "STARTED" else "PENDING")


def cancel_key(task_id: str) -> str:
    """Redis key asking workers not to start ``task_id``."""
    return CANCEL_KEY + task_id


class WorkerHeartbeat:
    """A worker announces itself every few seconds; the key expires if it stops."""

    def __init__(self, url: str, hostname: str, interval_s: float) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.key, self.interval_s = WORKER_KEY + hostname, interval_s
        self.hostname = hostname

    def beat(self, info: dict[str, Any]) -> None:
        """Refresh this worker's key."""
        body = {"hostname": self.hostname, "at": time.time(), **info}
        self.client.set(self.key, json.dumps(body), ex=max(2, round(self.interval_s * 3)))

    def clear(self) -> None:
        """Remove this worker's key (clean shutdown)."""
        self.client.delete(self.key)


async def live_workers(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Workers whose heartbeat has not expired."""
    keys = [k async for k in client.scan_iter(match=WORKER_KEY + "*", count=100)]
    if not keys:
        return []
    values = await client.mget(keys)
    return [json.loads(v) for v in values if v]
