"""The task records in the result backend's Redis: who writes them, in one place.

``TaskRecords`` is the API's side (asyncio): issuing task ids (with their tombstones and, for a batch, its
record, in the same round trip), claiming idempotency keys (one request, or a whole group in one round trip),
reading results and status, cancelling, registering callbacks. Dead-letter replay uses it too. ``WorkerRecords``
is the worker's side (blocking): cancel checks, storing a chunk's outcomes (and its events), reading and updating
callbacks. The keys and their TTLs are in ``keys.py``.

Past 400 lines on purpose: every write to a task's keys is in this one module, so that who writes what, in which
round trip, reads in one place (``docs/architecture.md`` draws the same table).
"""

from __future__ import annotations

import asyncio
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

from matchcast.errors import Gone, ServiceUnavailable, TaskNotFound
from matchcast.metrics import TASK_GONE
from matchcast.schemas import CallbackStatus, TaskStatus
from matchcast.tasks.backend_client import ReplicaWait
from matchcast.tasks.keys import (
    BACKEND_KEY,
    EVENTS_CHANNEL,
    GONE_SLOT_S,
    batch_events_key,
    batch_key,
    callback_key,
    cancel_key,
    gone_slot,
    result_key,
    task_key,
)
from matchcast.tasks.status import DEAD_LETTERED, EXPIRED, TAKEN_OVER, expired_meta, task_status

CLAIM_TRIES = 3
TOMBSTONED = frozenset({"async", "batch"})  # ids clients poll: they answer 410 once expired (sync ids are not kept)
ORPHAN_S = 2.0  # an idempotency claim this old whose task has no record was cut short: it may be taken over
BATCH_EVENTS_MAX = 2000  # entries a batch's event stream keeps (a batch of 1,000 makes about a dozen)


def backend_down(exc: Exception) -> ServiceUnavailable:
    """The error for a result backend that did not answer."""
    return ServiceUnavailable(f"result backend unreachable: {type(exc).__name__}", ["result_backend"])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


class TaskRecords:
    """The API's reads and writes of task records; a Redis outage is ``ServiceUnavailable``."""

    def __init__(
        self, client: aioredis.Redis, ttl_s: int, gone_s: int = 24 * 3600, wait: ReplicaWait | None = None
    ) -> None:
        self.client, self.ttl_s, self.gone_s = client, ttl_s, gone_s
        self.wait = wait or ReplicaWait(0, 0)

    async def issue(
        self,
        task_ids: Sequence[str],
        source: str,
        publish: Callable[[], Awaitable[None]],
        undo: Iterable[str] = (),
        batch: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """Record ``task_ids`` as issued by ``source`` (one round trip), then ``publish`` their message(s).

        Ids clients poll get a tombstone in the same round trip (``gone_slot``: 410 after expiry), and a ``batch``
        (its id and record) is written with them. If publishing fails, the records (and the keys in ``undo``, e.g.
        idempotency claims) are removed again: an id whose message never reached the broker is not reported as
        queued.
        """
        now = time.time()
        meta = json.dumps({"source": source, "issued_at": now})
        extra = [batch_key(batch[0])] if batch else []
        try:
            try:
                if len(task_ids) == 1 and source not in TOMBSTONED:
                    await self.client.set(task_key(task_ids[0]), meta, ex=self.ttl_s)
                else:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for task_id in task_ids:
                            pipe.set(task_key(task_id), meta, ex=self.ttl_s)
                        if source in TOMBSTONED:
                            self._tombstones(pipe, "task", task_ids, now)
                        if batch:
                            pipe.hset(batch_key(batch[0]), "meta", json.dumps(batch[1]))
                            pipe.expire(batch_key(batch[0]), self.ttl_s)
                            self._tombstones(pipe, "batch", [batch[0]], now)
                        await self.wait.execute_async(pipe)  # polled ids outlive a failover: on a replica first
            except RedisError as exc:
                raise backend_down(exc) from exc
            await publish()
        except Exception:
            await self.release(*undo, *extra, *(task_key(t) for t in task_ids))
            raise

    def _tombstones(self, pipe: Any, kind: str, ids: Sequence[str], now: float) -> None:
        """Add ids to their hour's tombstone sets, kept until the last of them has been expired ``gone_s``."""
        until = int((now // GONE_SLOT_S + 1) * GONE_SLOT_S) + self.ttl_s + self.gone_s
        keys: set[str] = set()
        for ident in ids:
            key, member = gone_slot(kind, ident, now)
            pipe.sadd(key, str(member))
            keys.add(key)
        for key in keys:
            pipe.expireat(key, until)

    async def gone(self, kind: str, ident: str) -> Gone | None:
        """If ``ident`` (not found) was issued and has expired within ``gone_s``: the 410 to answer (one round trip)."""
        now = time.time()
        first = int((now - self.ttl_s - self.gone_s) // GONE_SLOT_S) - 1
        last = int((now - self.ttl_s) // GONE_SLOT_S)  # ids issued later than this hour have not expired yet
        hours = list(range(first, last + 1))
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for hour in hours:
                    key, member = gone_slot(kind, ident, hour * GONE_SLOT_S)
                    pipe.sismember(key, str(member))
                found = await pipe.execute()
        except RedisError as exc:
            raise backend_down(exc) from exc
        hits = [hour for hour, hit in zip(hours, found, strict=True) if hit]
        if not hits:
            return None
        # Issued some time in that hour: expired ``ttl_s`` later, some time in the hour after (and by now).
        expired_at = min(now, (hits[-1] + 1) * GONE_SLOT_S + self.ttl_s)
        after = min(expired_at, hits[-1] * GONE_SLOT_S + self.ttl_s)
        TASK_GONE.labels(kind=kind).inc()
        window = f"between {_iso(after)} and {_iso(expired_at)}"
        return Gone(f"{kind} {ident} has expired {window}: results are kept {self.ttl_s} s", expired_at, after)

    async def missing(self, task_id: str) -> Exception:
        """The error for a task id without a record: 410 if it expired lately, else 404."""
        return await self.gone("task", task_id) or TaskNotFound(task_id)

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
        """Whether ``key``'s ``holder`` failed, was cancelled or was never issued; if so the key is released for a
        new claim.

        Never issued: a claim whose task record did not follow within ``ORPHAN_S`` (the backend failed between the
        two round trips, a failover say, and the claim's release failed with it). Such a holder was never sent and
        would answer 404 forever; a younger claim is waited for (its record is a round trip away).
        """
        for _ in range(2):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.get(result_key(holder))
                    pipe.exists(task_key(holder))
                    pipe.pttl(key)
                    raw, issued, pttl = await pipe.execute()
            except RedisError as exc:
                raise backend_down(exc) from exc
            if raw or issued:
                status = json.loads(raw).get("status") if raw else None
                if status not in TAKEN_OVER:
                    return False
                break
            age = self.ttl_s - max(pttl, 0) / 1000
            if age >= ORPHAN_S:
                break
            await asyncio.sleep(ORPHAN_S - age)
        else:
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
            raise await self.missing(task_id)
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

    async def durability(self) -> tuple[bool, int]:
        """Whether the backend keeps an append-only file (what it acknowledged survives its restart), and how many
        replicas its master has (what it acknowledged survives a failover), in one round trip."""
        try:  # two sections, two commands: INFO takes one section before Redis 7
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.info("persistence")
                pipe.info("replication")
                persistence, replication = await pipe.execute()
        except RedisError as exc:
            raise backend_down(exc) from exc
        return bool(int(persistence.get("aof_enabled", 0))), int(replication.get("connected_slaves", 0))

    async def batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch's record (``meta`` decoded, times as floats), or None if there is none."""
        try:
            raw = await self.client.hgetall(batch_key(batch_id))
        except RedisError as exc:
            raise backend_down(exc) from exc
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "meta" not in fields:
            return None
        record: dict[str, Any] = json.loads(fields.pop("meta"))
        record.update({k: float(v) for k, v in fields.items()})
        return record

    async def metas(self, task_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Celery's result records of many tasks in one round trip (None where there is none yet)."""
        if not task_ids:
            return []
        try:
            raws = await self.client.mget([result_key(t) for t in task_ids])
        except RedisError as exc:
            raise backend_down(exc) from exc
        return [json.loads(raw) if raw else None for raw in raws]

    async def cancel_batch(self, batch_id: str, task_ids: Sequence[str], revoked: Callable[[str], Any]) -> None:
        """Cancel a batch's ``task_ids`` (none started) in one round trip: cancel markers for the workers, their
        ``REVOKED`` records (``revoked(task_id)``: encoded as the backend stores them), and one batch event."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.set(cancel_key(task_id), "1", ex=self.ttl_s)
                    pipe.set(result_key(task_id), revoked(task_id), ex=self.ttl_s)
                pipe.hsetnx(batch_key(batch_id), "cancelled_at", time.time())
                add_events(pipe, batch_id, [(t, "REVOKED") for t in task_ids], self.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise backend_down(exc) from exc

    async def last_batch_event(self, batch_id: str) -> str:
        """The id of a batch's latest event (``0-0`` before the first)."""
        try:
            raw = await self.client.xrevrange(batch_events_key(batch_id), count=1)
        except RedisError as exc:
            raise backend_down(exc) from exc
        return _text(raw[0][0]) if raw else "0-0"

    async def batch_events(self, batch_id: str, after: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """A batch's events after the event id ``after``, oldest first: (id, kind, [(task id, state), ...])."""
        try:
            raw = await self.client.xrange(batch_events_key(batch_id), min=f"({after}", max="+")
        except RedisError as exc:
            raise backend_down(exc) from exc
        out = []
        for ident, fields in raw or []:
            f = {_text(k): _text(v) for k, v in (fields or {}).items()}
            out.append((_text(ident), f.get("kind", "tasks"), [(t, s) for t, s in json.loads(f.get("tasks", "[]"))]))
        return out

    async def forget(self, task_id: str) -> None:
        """Drop a delivered group's result and record: nobody reads them again."""
        with contextlib.suppress(RedisError):
            await self.client.unlink(result_key(task_id), task_key(task_id))


class WorkerRecords:
    """The worker's reads and writes of task records, through the Celery result backend's client."""

    def __init__(self, client: redis.Redis, ttl_s: int, wait: ReplicaWait | None = None) -> None:
        self.client, self.ttl_s = client, ttl_s
        self.wait = wait or ReplicaWait(0, 0)

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

    def store_results(
        self,
        results: dict[str, dict[str, Any]],
        encode: Callable[[Any], Any],
        *,
        expired: dict[str, float] | None = None,
        failed: Sequence[str] = (),
        batch: str | None = None,
    ) -> None:
        """Store a chunk's outcomes in one round trip, in Celery's own format (``encode``: the backend's):
        successful results, and ``EXPIRED`` records for the tasks whose deadline (in ``expired``) had passed.

        The results themselves are not published (every API process's result listener would decode each): one
        small event names the tasks that changed (``EVENTS_CHANNEL``, for event streams), and a ``batch`` gets an
        entry in its event stream (``failed``: tasks already marked failed, which it names too).
        """
        now = time.time()
        done = datetime.fromtimestamp(now, UTC).isoformat()
        expired = expired or {}
        with self.client.pipeline(transaction=False) as pipe:
            for task_id, deadline in expired.items():
                pipe.setex(result_key(task_id), self.ttl_s, encode(expired_meta(task_id, deadline, now)))
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
            changes = [(t, "SUCCESS") for t in results] + [(t, EXPIRED) for t in expired]
            changes += [(t, "FAILURE") for t in failed]
            if batch:
                add_events(pipe, batch, changes, self.ttl_s)
            elif changes:
                pipe.publish(EVENTS_CHANNEL, json.dumps({"tasks": [t for t, _ in changes]}))
            self.wait.execute(pipe)  # on a replica before the chunk is acked: a failover cannot lose them

    def expire(self, task_id: str, deadline: float, encode: Callable[[Any], Any]) -> None:
        """Record that ``task_id`` was not started by its ``deadline`` (``EXPIRED``), and say so."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.setex(result_key(task_id), self.ttl_s, encode(expired_meta(task_id, deadline, time.time())))
            pipe.publish(EVENTS_CHANNEL, json.dumps({"tasks": [task_id]}))
            self.wait.execute(pipe)

    def dead_lettered(self, batch_id: str, task_ids: Sequence[str]) -> None:
        """Name a batch's dead-lettered tasks (their records already say so) in its event stream, and say so."""
        with self.client.pipeline(transaction=False) as pipe:
            add_events(pipe, batch_id, [(t, DEAD_LETTERED) for t in task_ids], self.ttl_s)
            pipe.execute()

    def start_batch(self, batch_id: str) -> None:
        """Note when a worker began a batch's first chunk (one round trip; later chunks change nothing)."""
        if self.client.hsetnx(batch_key(batch_id), "started_at", time.time()):
            with self.client.pipeline(transaction=False) as pipe:
                add_events(pipe, batch_id, [], self.ttl_s, kind="started")
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


def add_events(pipe: Any, batch_id: str, changes: Sequence[tuple[str, str]], ttl_s: int, kind: str = "tasks") -> None:
    """Queue on ``pipe``: a batch event stream entry for ``changes`` ((task id, state) pairs), and its notice on
    ``EVENTS_CHANNEL`` (which names the batch and its tasks: watchers of either wake)."""
    key = batch_events_key(batch_id)
    pipe.xadd(key, {"kind": kind, "tasks": json.dumps(changes)}, maxlen=BATCH_EVENTS_MAX, approximate=True)
    pipe.expire(key, ttl_s)
    pipe.publish(EVENTS_CHANNEL, json.dumps({"batch": batch_id, "tasks": [t for t, _ in changes]}))
