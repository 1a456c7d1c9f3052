"""Sending ``predict_match`` by name and hearing its result: one Redis listener per API process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from amqp.exceptions import AMQPError
from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from matchcast.config import ML_QUEUE, PREDICT_TASK, Settings
from matchcast.errors import (
    FeaturesNotReady,
    InvalidInput,
    MatchcastError,
    NotFound,
    PredictionFailed,
    PredictionTimeout,
    ServiceUnavailable,
    TaskNotFound,
)
from matchcast.schemas import TaskStatus
from matchcast.service.queue import make_celery
from matchcast.service.tracking import RESULT_KEY, task_key

log = logging.getLogger("matchcast.api")
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
_ERRORS: dict[str, type[MatchcastError]] = {
    "MatchNotFound": NotFound,
    "NotFound": NotFound,
    "InvalidInput": InvalidInput,
    "FeaturesNotReady": FeaturesNotReady,
}


def _backend_down(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"result backend unreachable: {type(exc).__name__}", ["result_backend"])


def error_text(meta: dict[str, Any]) -> str:
    """A one-line reason from a Celery failure record."""
    res = meta.get("result")
    if isinstance(res, dict) and "exc_type" in res:
        msg = res.get("exc_message")
        if isinstance(msg, list | tuple):
            msg = " ".join(str(m) for m in msg)
        return f"{res['exc_type']}: {msg}"
    return str(res)


class ResultListener:
    """Pattern-subscribes once to Celery's result channels and wakes the waiters of finished tasks."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._run(), name="matchcast-result-listener")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(RESULT_KEY + "*")
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "pmessage":
                        continue
                    channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    fut = self.waiters.get(channel.removeprefix(RESULT_KEY))
                    if fut is None or fut.done():
                        continue
                    meta = json.loads(msg["data"])
                    if meta.get("status") in READY_STATES:
                        fut.set_result(meta)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:  # reconnect after a backend outage; waiters fall back to GET
                self._ready.clear()
                log.warning("result listener lost the backend (%s); reconnecting", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.5)

    def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """Register interest in a task before it is sent."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[task_id] = fut
        return fut

    def forget(self, task_id: str) -> None:
        """Drop interest in a task."""
        self.waiters.pop(task_id, None)


class Dispatcher:
    """Submits tasks by name, records issued ids, waits for results, reads status."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery: Celery = make_celery(settings)
        self.redis = aioredis.Redis.from_url(
            settings.resolved_result_backend(), socket_timeout=3, socket_connect_timeout=2, health_check_interval=30
        )
        self.listener = ResultListener(self.redis)

    async def start(self) -> None:
        """Start the result listener."""
        await self.listener.start()

    async def close(self) -> None:
        """Stop listening and close connections."""
        await self.listener.stop()
        await self.redis.aclose()
        await run_in_threadpool(self.celery.close)

    async def _send(self, task_id: str, payload: dict[str, Any], *, expires: float | None, source: str) -> None:
        meta = json.dumps({"source": source, "issued_at": time.time()})
        try:
            await self.redis.set(task_key(task_id), meta, ex=self.settings.task_ttl_s)
        except RedisError as exc:
            raise _backend_down(exc) from exc
        try:
            await run_in_threadpool(
                self.celery.send_task, PREDICT_TASK, args=[payload], task_id=task_id, queue=ML_QUEUE, expires=expires
            )
        except (OperationalError, KombuError, AMQPError, RedisError, OSError) as exc:
            with contextlib.suppress(RedisError):
                await self.redis.delete(task_key(task_id))
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc

    async def submit(self, payload: dict[str, Any], *, source: str = "async") -> str:
        """Queue a prediction and return its task id at once."""
        task_id = str(uuid.uuid4())
        await self._send(task_id, payload, expires=None, source=source)
        return task_id

    async def predict(self, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Queue a prediction and wait for it up to ``timeout`` seconds without blocking the loop."""
        task_id = str(uuid.uuid4())
        fut = self.listener.expect(task_id)
        try:
            # The task expires with the caller's patience: after a 504 nobody runs it.
            await self._send(task_id, payload, expires=timeout, source="sync")
            try:
                meta = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                late = await self._read_meta(task_id)
                if late is None or late.get("status") not in READY_STATES:
                    raise PredictionTimeout(f"no prediction within {timeout:g} s (task {task_id})") from None
                meta = late
        finally:
            self.listener.forget(task_id)
        return self._outcome(meta)

    @staticmethod
    def _outcome(meta: dict[str, Any]) -> dict[str, Any]:
        if meta.get("status") == "SUCCESS":
            result: dict[str, Any] = meta["result"]
            return result
        res = meta.get("result")
        err = _ERRORS.get(str(res.get("exc_type")) if isinstance(res, dict) else "")
        if err is not None:
            raise err(error_text(meta).split(": ", 1)[-1])
        raise PredictionFailed(error_text(meta))

    async def _read_meta(self, task_id: str) -> dict[str, Any] | None:
        try:
            raw = await self.redis.get(RESULT_KEY + task_id)
        except RedisError as exc:
            raise _backend_down(exc) from exc
        return json.loads(raw) if raw else None

    async def status(self, task_id: str) -> TaskStatus:
        """What became of an issued task; ``TaskNotFound`` for ids never issued or expired."""
        try:
            issued = await self.redis.exists(task_key(task_id))
        except RedisError as exc:
            raise _backend_down(exc) from exc
        if not issued:
            raise TaskNotFound(task_id)
        meta = await self._read_meta(task_id)
        if meta is None:
            return TaskStatus(task_id=task_id, status="PENDING")
        state = meta.get("status", "PENDING")
        if state == "SUCCESS":
            return TaskStatus(task_id=task_id, status="SUCCESS", result=meta.get("result"))
        if state in ("FAILURE", "REVOKED", "RETRY"):
            return TaskStatus(task_id=task_id, status=state, error=error_text(meta))
        return TaskStatus(task_id=task_id, status="STARTED" if state == "STARTED" else "PENDING")
