"""The task records in the result backend's Redis: who writes them, in one place.

``TaskRecords`` is the API's side (asyncio): issuing task ids, claiming idempotency keys (one request, or a
whole group in one round trip), reading results and status, cancelling, registering callbacks. Dead-letter
replay uses it too. ``WorkerRecords`` is the worker's side (blocking): cancel checks, storing a chunk's results,
reading and updating callbacks. The keys and their TTLs are in ``keys.py``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from matchcast.errors import ServiceUnavailable, TaskNotFound
from matchcast.schemas import CallbackStatus, TaskStatus
from matchcast.tasks.keys import BACKEND_KEY, callback_key, cancel_key, result_key, task_key
from matchcast.tasks.status import TAKEN_OVER, task_status

CLAIM_TRIES = 3


def backend_down(exc: Exception) -> ServiceUnavailable:
    """The error for a result backend that did not answer."""
    return ServiceUnavailable(f"result backend unreachable: {type(exc).__name__}", ["result_backend"])


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


class TaskRecords:
    """The API's reads and writes of task records; a Redis outage is ``ServiceUnavailable``."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.client, self.ttl_s = client, ttl_s

    async def issue(
        self, task_ids: Sequence[str], source: str, publish: Callable[[], Awaitable[None]], undo: Iterable[str] = ()
    ) -> None:
        """Record ``task_ids`` as issued by ``source`` (one round trip), then ``publish`` their message(s).

        If publishing fails, the records (and the keys in ``undo``, e.g. idempotency claims) are removed again:
        an id whose message never reached the broker is not reported as queued.
        """
        meta = json.dumps({"source": source, "issued_at": time.time()})
        try:
            try:
                if len(task_ids) == 1:
                    await self.client.set(task_key(task_ids[0]), meta, ex=self.ttl_s)
                else:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for task_id in task_ids:
                            pipe.set(task_key(task_id), meta, ex=self.ttl_s)
                        await pipe.execute()
            except RedisError as exc:
                raise backend_down(exc) from exc
            await publish()
        except Exception:
            await self.release(*undo, *(task_key(t) for t in task_ids))
            raise

    async def release(self, *keys: str) -> None:
        """Remove records (best effort: they expire anyway)."""
        if keys:
            with contextlib.suppress(RedisError):
                await self.client.delete(*keys)

    async def claim(self, key: str, task_id: str) -> str | None:
        """Claim ``key`` for ``task_id`` (None), or the live task it already points at (one round trip).

        A key pointing at a failed or cancelled task is taken over: that work may be asked for again.
        """
        for _ in range(CLAIM_TRIES):
            won, existing = (await self.claim_many([(key, task_id)]))[0]
            if won:
                return None
            if existing and not await self.taken_over(existing, key):
                return existing
        raise ServiceUnavailable("could not claim the idempotency key; try again", ["result_backend"])

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[tuple[bool, str]]:
        """Claim many ``(key, task_id)`` in one round trip: ``(True, "")`` for a win, else ``(False, holder)``.

        The holder is ``""`` when the key expired in between (claim again).
        """
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, task_id in claims:
                    pipe.set(key, task_id, nx=True, ex=self.ttl_s)
                    pipe.get(key)
                answers = await pipe.execute()
        except RedisError as exc:
            raise backend_down(exc) from exc
        return [(bool(won), "" if won else _text(raw)) for won, raw in zip(answers[::2], answers[1::2], strict=True)]

    async def taken_over(self, holder: str, key: str) -> bool:
        """Whether ``key``'s ``holder`` failed or was cancelled; if so the key is released for a new claim."""
        meta = await self.meta(holder)
        if meta is None or meta.get("status") not in TAKEN_OVER:
            return False
        await self.release(key)
        return True

    async def meta(self, task_id: str) -> dict[str, Any] | None:
        """Celery's result record of ``task_id`` (None while it has none)."""
        try:
            raw = await self.client.get(result_key(task_id))
        except RedisError as exc:
            raise backend_down(exc) from exc
        return json.loads(raw) if raw else None

    async def status(self, task_id: str) -> TaskStatus:
        """What became of an issued task; ``TaskNotFound`` for ids never issued or expired (one round trip)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.exists(task_key(task_id))
                pipe.get(result_key(task_id))
                pipe.get(callback_key(task_id))
                issued, raw, callback = await pipe.execute()
        except RedisError as exc:
            raise backend_down(exc) from exc
        if not issued and not raw:  # a result proves the id was issued, even if its record was lost
            raise TaskNotFound(task_id)
        status = task_status(task_id, json.loads(raw) if raw else None)
        if callback:
            status.callback = CallbackStatus.model_validate_json(callback)
        return status

    async def mark_cancelled(self, task_id: str) -> None:
        """Ask workers not to start ``task_id``."""
        try:
            await self.client.set(cancel_key(task_id), "1", ex=self.ttl_s)
        except RedisError as exc:
            raise backend_down(exc) from exc

    async def register_callback(self, task_id: str, url: str) -> None:
        """Register a task's completion callback (before its message is sent, so a fast task cannot miss it)."""
        try:
            await self.client.set(callback_key(task_id), CallbackStatus(url=url).model_dump_json(), ex=self.ttl_s)
        except RedisError as exc:
            raise backend_down(exc) from exc

    async def backend_epoch(self) -> str:
        """The epoch of the backend's data: a marker key without TTL, created when missing.

        A new epoch where there was another means the backend lost its data (restarted without an append-only
        file, or replaced): every record written before is gone.
        """
        marker = json.dumps({"epoch": uuid.uuid4().hex, "since": time.time()})
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(BACKEND_KEY, marker, nx=True)
                pipe.get(BACKEND_KEY)
                _, raw = await pipe.execute()
        except RedisError as exc:
            raise backend_down(exc) from exc
        epoch: str = json.loads(raw)["epoch"]
        return epoch

    async def persistent(self) -> bool:
        """Whether the backend keeps an append-only file, so that what it acknowledged survives its restart."""
        try:
            info = await self.client.info("persistence")
        except RedisError as exc:
            raise backend_down(exc) from exc
        return bool(int(info.get("aof_enabled", 0)))

    async def forget(self, task_id: str) -> None:
        """Drop a delivered group's result and record: nobody reads them again."""
        with contextlib.suppress(RedisError):
            await self.client.unlink(result_key(task_id), task_key(task_id))


class WorkerRecords:
    """The worker's reads and writes of task records, through the Celery result backend's client."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client, self.ttl_s = client, ttl_s

    def starting(self, task_ids: Sequence[str]) -> set[str]:
        """Tasks about to run: which were cancelled (none if the backend is away), in one round trip.

        Each task's issued record is written again if it is missing (``SET NX``), so that a record lost with the
        backend's data (the last second before a crash, or a backend without an append-only file) comes back
        as soon as a worker takes the task from the broker.
        """
        restored = json.dumps({"source": "worker", "issued_at": time.time()})
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.exists(cancel_key(task_id))
                    pipe.set(task_key(task_id), restored, nx=True, ex=self.ttl_s)
                answers = pipe.execute()
        except RedisError:
            return set()
        return {task_id for task_id, flag in zip(task_ids, answers[::2], strict=True) if flag}

    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these tasks were cancelled (one round trip; none if the backend is away)."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.exists(cancel_key(task_id))
                flags = pipe.execute()
        except RedisError:
            return set()
        return {task_id for task_id, flag in zip(task_ids, flags, strict=True) if flag}

    def store_results(self, results: dict[str, dict[str, Any]], encode: Callable[[Any], Any]) -> None:
        """Store many successful results in one round trip, in Celery's own format (``encode``: the backend's).

        Not published: async results are polled, and every API process's result listener would otherwise
        decode each of these messages while it serves.
        """
        done = datetime.now(UTC).isoformat()
        with self.client.pipeline(transaction=False) as pipe:
            for task_id, result in results.items():
                meta: dict[str, Any] = {
                    "status": "SUCCESS",
                    "result": result,
                    "traceback": None,
                    "children": [],
                    "date_done": done,
                    "task_id": task_id,
                }
                pipe.setex(result_key(task_id), self.ttl_s, encode(meta))
            pipe.execute()

    def has_callback(self, task_id: str) -> bool:
        """Whether ``task_id`` has a completion callback registered."""
        return bool(self.client.exists(callback_key(task_id)))

    def callback(self, task_id: str) -> CallbackStatus | None:
        """A task's completion callback, if it has one."""
        raw = self.client.get(callback_key(task_id))
        return CallbackStatus.model_validate_json(raw) if raw else None

    def save_callback(self, task_id: str, callback: CallbackStatus) -> None:
        """Record a callback's delivery attempts."""
        self.client.set(callback_key(task_id), callback.model_dump_json(), ex=self.ttl_s)
