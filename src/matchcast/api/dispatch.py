"""Sending ``predict_match`` by name and hearing its result: one Redis listener per API process.

Also what keeps the promises around a task's life: issued ids recorded with a TTL (unknown ids are 404),
idempotent submission, a backlog limit sampled in the background, cancellation, and dead-letter states.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from amqp.exceptions import AMQPError
from celery import Celery
from kombu import Connection
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from matchcast.config import ML_QUEUE, PREDICT_TASK, Settings
from matchcast.data.dead_letters import DeadLetters
from matchcast.errors import (
    Conflict,
    DeadLettered,
    FeaturesNotReady,
    InvalidInput,
    MatchcastError,
    NotFound,
    Overloaded,
    PredictionFailed,
    PredictionTimeout,
    ServiceUnavailable,
    TaskNotFound,
)
from matchcast.metrics import DEAD_LETTERS, QUEUE_DEPTH
from matchcast.schemas import CallbackStatus, TaskStatus
from matchcast.service.queue import BULK_CHUNK, BULK_QUEUE, BULK_TASK, declare_topology, is_amqp, make_celery
from matchcast.service.tracking import (
    IDEMPOTENCY_KEY,
    RESULT_KEY,
    callback_key,
    cancel_key,
    error_text,
    exc_type_of,
    status_of,
    task_key,
)
from matchcast.service.wiring import store_for

log = logging.getLogger("matchcast.api")
DEAD_LETTER_SAMPLE_S = 15.0
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
BROKER_ERRORS = (OperationalError, KombuError, AMQPError, RedisError, OSError)
_ERRORS: dict[str, type[MatchcastError]] = {
    "MatchNotFound": NotFound,
    "NotFound": NotFound,
    "InvalidInput": InvalidInput,
    "FeaturesNotReady": FeaturesNotReady,
    "DeadLettered": DeadLettered,
}


def _backend_down(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"result backend unreachable: {type(exc).__name__}", ["result_backend"])


def queue_depth(settings: Settings, conn: Connection) -> tuple[int, int | None]:
    """Messages waiting in ``ml`` and, on RabbitMQ, its consumers."""
    conn.ensure_connection(max_retries=1, timeout=settings.readiness_timeout_s)
    if conn.transport.driver_type == "amqp":
        try:
            _, depth, consumers = conn.default_channel.queue_declare(ML_QUEUE, passive=True)
        except AMQPError:  # not declared yet: nothing waits, nobody consumes
            conn.close()
            return 0, 0
        return int(depth), int(consumers)
    client: Any = conn.default_channel.client  # type: ignore[attr-defined]
    return int(client.llen(ML_QUEUE)), None


class ResultListener:
    """Pattern-subscribes once to Celery's result channels and wakes the waiters of finished tasks."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None

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
                log.warning("result listener lost the backend (%s); reconnecting", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.5)

    def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """Register interest in a task (before it is sent, or before its state is read)."""
        fut = self.waiters.get(task_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[task_id] = fut
        return fut

    def forget(self, task_id: str) -> None:
        """Drop interest in a task."""
        self.waiters.pop(task_id, None)


class BacklogSampler:
    """Samples the depth of ``ml`` in the background so that admission control costs nothing per request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.depth: int | None = None
        self.consumers: int | None = None
        self.sampled_at = 0.0
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> tuple[int, int | None]:
        if self._conn is None:
            self._conn = Connection(self.settings.resolved_broker_url(), connect_timeout=2)
        try:
            return queue_depth(self.settings, self._conn)
        except Exception:
            with contextlib.suppress(Exception):
                self._conn.release()
            self._conn = None
            raise

    async def _run(self) -> None:
        dead_sampled = float("-inf")
        while True:
            if time.monotonic() - dead_sampled >= DEAD_LETTER_SAMPLE_S:
                dead_sampled = time.monotonic()
                try:  # keeps the dead-letter gauge (and its alert) current without anyone listing them
                    store = store_for(self.settings)
                    DEAD_LETTERS.set(await run_in_threadpool(DeadLetters(store).count))
                except Exception as exc:
                    log.debug("could not count dead letters: %s", exc)
            try:
                depth, self.consumers = await run_in_threadpool(self._sample)
                self.depth, self.sampled_at = depth, time.monotonic()
                QUEUE_DEPTH.set(depth)
            except Exception:
                self.depth = None
            await asyncio.sleep(self.settings.backlog_sample_s)

    async def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.create_task(self._run(), name="matchcast-backlog-sampler")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await run_in_threadpool(self._conn.release)


class Dispatcher:
    """Submits tasks by name, records issued ids, waits for results, reads status, cancels."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery: Celery = make_celery(settings, publisher=True)
        self.redis = aioredis.Redis.from_url(
            settings.resolved_result_backend(), socket_timeout=3, socket_connect_timeout=2, health_check_interval=30
        )
        self.listener = ResultListener(self.redis)
        self.backlog = BacklogSampler(settings)

    async def start(self) -> None:
        """Start the result listener and backlog sampler; declare the queues if the broker is there."""
        await self.listener.start()
        await self.backlog.start()

        def declare() -> None:
            with Connection(self.settings.resolved_broker_url(), connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                declare_topology(self.settings, conn)

        try:
            await run_in_threadpool(declare)
        except Exception as exc:  # the broker may come later; publishing declares ``ml`` again
            log.warning("could not declare queues at start (%s)", type(exc).__name__)

    async def close(self) -> None:
        """Stop background work and close connections."""
        await self.listener.stop()
        await self.backlog.stop()
        await self.redis.aclose()
        await run_in_threadpool(self.celery.close)

    async def _send(self, task_id: str, payload: dict[str, Any], *, expires: float | None, source: str) -> None:
        now = time.time()
        meta = json.dumps({"source": source, "issued_at": now})
        try:
            await self.redis.set(task_key(task_id), meta, ex=self.settings.task_ttl_s)
        except RedisError as exc:
            raise _backend_down(exc) from exc
        try:
            await run_in_threadpool(
                self.celery.send_task,
                PREDICT_TASK,
                args=[payload],
                task_id=task_id,
                queue=ML_QUEUE,
                expires=expires,
                headers={"submitted_at": now},
            )
        except BROKER_ERRORS as exc:
            with contextlib.suppress(RedisError):
                await self.redis.delete(task_key(task_id))
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc

    def _admit(self) -> None:
        depth = self.backlog.depth
        if depth is not None and depth >= self.settings.max_backlog:
            raise Overloaded(f"{depth} predictions are waiting in {ML_QUEUE} (limit {self.settings.max_backlog})")

    async def _reusable(self, key: str) -> str | None:
        """The task id an idempotency key points at, if that task is queued, running or succeeded."""
        try:
            existing = await self.redis.get(key)
        except RedisError as exc:
            raise _backend_down(exc) from exc
        if not existing:
            return None
        task_id = existing.decode() if isinstance(existing, bytes) else str(existing)
        meta = await self._read_meta(task_id)
        if meta is not None and meta.get("status") in ("FAILURE", "REVOKED"):
            with contextlib.suppress(RedisError):
                await self.redis.delete(key)
            return None
        return task_id

    async def _claim(
        self, key: str | None, task_id: str, payload: dict[str, Any], *, expires: float | None, source: str
    ) -> str:
        """Send ``task_id``, or return the live task an idempotency key already points at."""
        if key is not None:
            found = await self._reusable(key)
            if found:
                return found
        if source == "async":
            self._admit()
        if key is not None:
            try:
                won = await self.redis.set(key, task_id, nx=True, ex=self.settings.task_ttl_s)
                raw = None if won else await self.redis.get(key)
            except RedisError as exc:
                raise _backend_down(exc) from exc
            if raw:  # a concurrent identical request was first: share its task
                return raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            await self._send(task_id, payload, expires=expires, source=source)
        except MatchcastError:
            if key is not None:
                with contextlib.suppress(RedisError):
                    await self.redis.delete(key)
            raise
        return task_id

    async def submit(
        self, payload: dict[str, Any], *, idempotency_key: str | None = None, callback_url: str | None = None
    ) -> str:
        """Queue a prediction and return its task id at once (the same id for a repeated idempotent request).

        With ``callback_url``, the task's final status is POSTed there (signed) when it ends.
        """
        key = f"{IDEMPOTENCY_KEY}async:{idempotency_key}" if idempotency_key else None
        task_id = str(uuid.uuid4())
        if callback_url is not None:
            key = f"{key}:cb:{payload_digest({'url': callback_url})}" if key else None
            body = CallbackStatus(url=callback_url).model_dump_json()
            try:  # registered before sending, so a fast task cannot finish unnoticed
                await self.redis.set(callback_key(task_id), body, ex=self.settings.task_ttl_s)
            except RedisError as exc:
                raise _backend_down(exc) from exc
        claimed = await self._claim(key, task_id, payload, expires=None, source="async")
        if claimed != task_id and callback_url is not None:
            with contextlib.suppress(RedisError):
                await self.redis.delete(callback_key(task_id))
        return claimed

    async def submit_batch(self, match_ids: list[int]) -> dict[int, str]:
        """Queue many stored matches as chunks on ``ml.bulk``; one task id per match, recorded before sending."""
        self._admit()
        ids = {m: str(uuid.uuid4()) for m in dict.fromkeys(match_ids)}
        meta = json.dumps({"source": "batch", "issued_at": time.time()})
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in ids.values():
                    pipe.set(task_key(task_id), meta, ex=self.settings.task_ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise _backend_down(exc) from exc
        items = [[task_id, match_id] for match_id, task_id in ids.items()]
        chunks = [items[i : i + BULK_CHUNK] for i in range(0, len(items), BULK_CHUNK)]

        def send() -> None:
            with self.celery.producer_or_acquire() as producer:
                for chunk in chunks:
                    self.celery.send_task(
                        BULK_TASK,
                        args=[{"items": chunk}],
                        queue=BULK_QUEUE,
                        producer=producer,
                        headers={"submitted_at": time.time()},
                    )

        try:
            await run_in_threadpool(send)
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc
        return ids

    async def predict(
        self, payload: dict[str, Any], *, timeout: float, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Queue a prediction and wait for it up to ``timeout`` seconds without blocking the loop.

        With an idempotency key, a request repeated while its task lives waits for that task instead.
        """
        key = f"{IDEMPOTENCY_KEY}sync:{idempotency_key}:{payload_digest(payload)}" if idempotency_key else None
        task_id = str(uuid.uuid4())
        fut = self.listener.expect(task_id)  # listen before sending so the result cannot slip by
        try:
            # The task expires with the caller's patience: after a 504 nobody runs it.
            claimed = await self._claim(key, task_id, payload, expires=timeout, source="sync")
            if claimed != task_id:
                self.listener.forget(task_id)
                task_id = claimed
                fut = self.listener.expect(task_id)
                early = await self._read_meta(task_id)
                if early is not None and early.get("status") in READY_STATES:
                    return self._outcome(early)
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
        if meta.get("status") == "REVOKED":
            raise Conflict("the task was cancelled or expired before it ran")
        err = _ERRORS.get(exc_type_of(meta) or "")
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
        try:  # one round trip: issued?, result, callback
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.exists(task_key(task_id))
                pipe.get(RESULT_KEY + task_id)
                pipe.get(callback_key(task_id))
                issued, raw, callback = await pipe.execute()
        except RedisError as exc:
            raise _backend_down(exc) from exc
        if not issued:
            raise TaskNotFound(task_id)
        status = status_of(task_id, json.loads(raw) if raw else None)
        if callback:
            status.callback = CallbackStatus.model_validate_json(callback)
        return status

    async def cancel(self, task_id: str) -> TaskStatus:
        """Revoke a queued task; a running or finished one is a ``Conflict``."""
        current = await self.status(task_id)
        if current.status not in ("PENDING", "RETRY"):
            raise Conflict(f"task {task_id} is {current.status}: only a queued task can be cancelled")
        try:
            await self.redis.set(cancel_key(task_id), "1", ex=self.settings.task_ttl_s)
        except RedisError as exc:
            raise _backend_down(exc) from exc

        def revoke() -> None:
            self.celery.backend.mark_as_revoked(task_id, reason="cancelled")
            with contextlib.suppress(*BROKER_ERRORS):
                self.celery.control.revoke(task_id)

        await run_in_threadpool(revoke)
        return TaskStatus(task_id=task_id, status="REVOKED", error="cancelled")


def payload_digest(payload: dict[str, Any]) -> str:
    """A stable digest of a request body, to tie an Idempotency-Key to one body."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def is_rabbitmq(settings: Settings) -> bool:
    """Whether the broker is RabbitMQ."""
    return is_amqp(settings.resolved_broker_url())
