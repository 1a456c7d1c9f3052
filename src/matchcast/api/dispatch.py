"""The API's one door to the workers: ``predict``, ``submit``, ``submit_batch``, ``status``, ``cancel``, ``batch``
and ``cancel_batch``.

A facade over modules with one job each: ``listener`` (results heard from Redis), ``grouping`` (sync groups and
async group commit), ``backlog`` (admission control), and the task protocol of ``matchcast.tasks`` (messages,
records, status). Nothing here knows a task body: work reaches the workers by task name through the broker.
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

from celery import Celery
from celery.exceptions import TaskRevokedError
from kombu import Connection
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from matchcast.api.backend_watch import BackendWatch
from matchcast.api.backlog import BacklogSampler
from matchcast.api.events import EventHub
from matchcast.api.grouping import AsyncGroups, SyncGroups
from matchcast.api.listener import ResultListener
from matchcast.config import Settings
from matchcast.errors import BatchNotFound, Conflict, PredictionTimeout, ServiceUnavailable
from matchcast.schemas import BatchCancelled, TaskStatus
from matchcast.tasks.backend_client import ReplicaWait, async_backend_client
from matchcast.tasks.batches import batch_meta
from matchcast.tasks.celery_app import declare_topology, is_amqp, make_celery
from matchcast.tasks.fairshare import FairShare
from matchcast.tasks.keys import callback_key, idempotency_key
from matchcast.tasks.messages import BROKER_ERRORS, TaskMessage, enqueue, ingest_upload, predict, predict_chunk
from matchcast.tasks.names import BULK_CHUNK
from matchcast.tasks.records import TaskRecords, backend_down
from matchcast.tasks.status import READY_STATES, outcome

log = logging.getLogger("matchcast.api")


class Dispatcher:
    """Submits tasks by name, records issued ids, waits for results, reads status, cancels."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery: Celery = make_celery(settings, publisher=True)
        self.redis = async_backend_client(
            settings, socket_timeout=3, socket_connect_timeout=2, health_check_interval=30
        )
        self.records = TaskRecords(self.redis, settings.task_ttl_s, settings.task_gone_s, ReplicaWait.of(settings))
        self.fair = FairShare(self.redis, settings.task_ttl_s)  # which bulk sub-queue a key's batches go to
        self.listener = ResultListener(self.redis)
        self.hub = EventHub(settings.sse_streams_per_key)  # open event streams, woken by the listener
        self.listener.watched, self.listener.changed = self.hub.watched, self.hub.changed
        self.listener.reconnected = self.hub.reconnected
        self.backlog = BacklogSampler(settings, self.fair)
        self.watch = BackendWatch(self.records)
        self.groups = SyncGroups(
            self.records,
            self.publish,
            self.listener,
            max_group=settings.sync_group_max,
            timeout=settings.sync_timeout_s,
            in_flight=settings.sync_groups_in_flight,
        )
        self.async_groups = AsyncGroups(self.records, self.publish, BULK_CHUNK)

    async def publish(self, *messages: TaskMessage) -> None:
        """Send messages without blocking the loop; ``ServiceUnavailable`` if the broker is away."""
        await run_in_threadpool(enqueue, self.celery, *messages)

    async def start(self) -> None:
        """Start the result listener and backlog sampler; declare the queues if the broker is there."""
        await self.listener.start()
        await self.backlog.start()
        await self.watch.start()

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
        await self.groups.close()
        await self.async_groups.close()
        await self.listener.stop()
        await self.backlog.stop()
        await self.watch.stop()
        await self.redis.aclose()
        await run_in_threadpool(self.celery.close)

    async def _single(self, key: str | None, message: TaskMessage, source: str) -> str:
        """Send a task of its own, or return the live task an idempotency ``key`` already points at."""
        assert message.task_id is not None
        if key is not None:
            existing = await self.records.claim(key, message.task_id)
            if existing is not None:
                return existing
        if source != "sync":
            try:
                self.backlog.admit()
            except Exception:
                await self.records.release(*([key] if key else []))
                raise
        await self.records.issue([message.task_id], source, lambda: self.publish(message), undo=[key] if key else [])
        return message.task_id

    async def _submit_grouped(self, key: str | None, task_id: str, match_id: int, deadline: float | None) -> str:
        """A stored match through the async groups; the key is claimed with the group, in one round trip."""
        self.backlog.admit()
        for _ in range(3):
            claimed, new = await self.async_groups.submit(key, task_id, match_id, deadline)
            if new:
                return claimed
            if not claimed or key is None:  # the key expired in between: claim again
                continue
            if not await self.records.taken_over(claimed, key):
                return claimed
        raise ServiceUnavailable("could not claim the idempotency key; try again", ["result_backend"])

    async def submit(
        self,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: float | None = None,
    ) -> str:
        """Queue a prediction and return its task id at once (the same id for a repeated idempotent request).

        A stored match without a callback joins the next ``ml`` chunk; with ``callback_url``, the prediction is
        a task of its own whose final status is POSTed there (signed) when it ends. Not started by ``deadline``
        (a Unix time), it ends ``EXPIRED`` uncomputed.
        """
        key = _idempotency("async", idempotency_key)
        task_id = str(uuid.uuid4())
        match_id = payload.get("match_id")
        if callback_url is None and isinstance(match_id, int) and set(payload) == {"match_id"}:
            return await self._submit_grouped(key, task_id, match_id, deadline)
        if callback_url is not None:
            key = f"{key}:cb:{payload_digest({'url': callback_url})}" if key else None
            await self.records.register_callback(task_id, callback_url)
        claimed = await self._single(key, predict(payload, task_id, sync=False, deadline=deadline), "async")
        if claimed != task_id and callback_url is not None:
            await self.records.release(callback_key(task_id))
        return claimed

    async def submit_upload(self, name: str, content: str, league: str | None) -> str:
        """Queue an uploaded file's ingest on ``ml.maintenance``: its task id (status as any task's)."""
        task_id = str(uuid.uuid4())
        message = ingest_upload(name, content, league, task_id)
        await self.records.issue([task_id], "maintenance", lambda: self.publish(message))
        return task_id

    async def submit_batch(
        self, match_ids: list[int], *, deadline: float | None = None, key: str | None = None
    ) -> tuple[str, dict[int, str]]:
        """Queue many stored matches as chunks on ``ml.bulk``: the batch id, and one task id per match.

        With fair share (the default), the chunks go to the bulk sub-queue of the submitting API ``key``
        (``tasks/fairshare.py``: one more round trip). The batch's record (its tasks, ``deadline``, ``key``) is
        written in the round trip that records the task ids, before anything is sent.
        """
        self.backlog.admit()
        batch_id = str(uuid.uuid4())
        ids = {m: str(uuid.uuid4()) for m in dict.fromkeys(match_ids)}
        items = [(task_id, match_id) for match_id, task_id in ids.items()]
        by = dict.fromkeys(ids.values(), deadline) if deadline is not None else None
        parts = [items[i : i + BULK_CHUNK] for i in range(0, len(items), BULK_CHUNK)]
        chunk_ids = [str(uuid.uuid4()) for _ in parts]
        queue = await self._fair_queue(key, [(c, len(p)) for c, p in zip(chunk_ids, parts, strict=True)])
        chunks = [
            predict_chunk(
                part,
                batch=True,
                batch_id=batch_id,
                deadlines={t: by[t] for t, _ in part} if by else None,
                queue=queue,
                chunk_id=chunk_id,
            )
            for chunk_id, part in zip(chunk_ids, parts, strict=True)
        ]
        record = batch_meta(ids, time.time(), deadline, key)
        try:
            await self.records.issue(
                list(ids.values()), "batch", lambda: self.publish(*chunks), batch=(batch_id, record)
            )
        except Exception:
            if queue is not None:  # nothing was sent: its shares are given back
                await self.fair.release(chunk_ids)
            raise
        return batch_id, ids

    async def _fair_queue(self, key: str | None, chunks: list[tuple[str, int]]) -> str | None:
        """The bulk sub-queue of ``key`` (fair share), or None for the one ``ml.bulk`` (fair share off)."""
        if not self.settings.fair_share:
            return None
        try:
            return await self.fair.assign(key, chunks)
        except RedisError as exc:
            raise backend_down(exc) from exc

    async def batch(self, batch_id: str) -> tuple[dict[str, Any], list[dict[str, Any] | None]]:
        """A batch's record and its tasks' result records (two round trips, whatever its size); 410 or 404."""
        record = await self.records.batch(batch_id)
        if record is None:
            raise await self.records.gone("batch", batch_id) or BatchNotFound(batch_id)
        return record, await self.records.metas(record["task_ids"])

    async def cancel_batch(self, batch_id: str) -> BatchCancelled:
        """Cancel every task of a batch that has not ended (nor, as far as can be told, started)."""
        record, metas = await self.batch(batch_id)
        queued = [t for t, meta in zip(record["task_ids"], metas, strict=True) if meta is None]
        backend = self.celery.backend
        encode, reason = backend.encode, backend.prepare_exception(TaskRevokedError("cancelled"))

        def revoked(task_id: str) -> Any:
            meta = {"status": "REVOKED", "result": reason, "traceback": None, "children": [], "task_id": task_id}
            return encode({**meta, "date_done": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})

        await self.records.cancel_batch(batch_id, queued, revoked)
        return BatchCancelled(batch_id=batch_id, cancelled=len(queued), not_cancelled=len(metas) - len(queued))

    async def predict(
        self, payload: dict[str, Any], *, timeout: float, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Queue a prediction and wait for it up to ``timeout`` seconds without blocking the loop.

        With an idempotency key, a request repeated while its task lives waits for that task instead (a task of
        its own); without one, the request joins the next group.
        """
        if idempotency_key is None and timeout == self.groups.timeout:
            return await self.groups.predict(payload)
        key = _idempotency("sync", idempotency_key, payload_digest(payload))
        task_id = str(uuid.uuid4())
        fut = self.listener.expect(task_id)  # listen before sending so the result cannot slip by
        try:  # the task expires with the caller's patience: after a 504 nobody runs it
            claimed = await self._single(key, predict(payload, task_id, sync=True, expires=timeout), "sync")
            if claimed != task_id:
                self.listener.forget(task_id)
                task_id = claimed
                fut = self.listener.expect(task_id)
                early = await self.records.meta(task_id)
                if early is not None and early.get("status") in READY_STATES:
                    result: dict[str, Any] = outcome(early)
                    return result
            try:
                meta = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                late = await self.records.meta(task_id)
                if late is None or late.get("status") not in READY_STATES:
                    raise PredictionTimeout(f"no prediction within {timeout:g} s (task {task_id})") from None
                meta = late
        finally:
            self.listener.forget(task_id)
        answer: dict[str, Any] = outcome(meta)
        return answer

    async def status(self, task_id: str) -> TaskStatus:
        """What became of an issued task; ``TaskNotFound`` for ids never issued or expired."""
        return await self.records.status(task_id)

    async def cancel(self, task_id: str) -> TaskStatus:
        """Revoke a queued task; a running or finished one is a ``Conflict``."""
        current = await self.records.status(task_id)
        if current.status not in ("PENDING", "RETRY"):
            raise Conflict(f"task {task_id} is {current.status}: only a queued task can be cancelled")
        await self.records.mark_cancelled(task_id)

        def revoke() -> None:
            self.celery.backend.mark_as_revoked(task_id, reason="cancelled")
            with contextlib.suppress(*BROKER_ERRORS):
                self.celery.control.revoke(task_id)

        await run_in_threadpool(revoke)
        return TaskStatus(task_id=task_id, status="REVOKED", error="cancelled")


def _idempotency(kind: str, key: str | None, *qualifiers: str) -> str | None:
    return idempotency_key(kind, key, *qualifiers) if key else None


def payload_digest(payload: dict[str, Any]) -> str:
    """A stable digest of a request body, to tie an Idempotency-Key to one body."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def is_rabbitmq(settings: Settings) -> bool:
    """Whether the broker is RabbitMQ."""
    return is_amqp(settings.resolved_broker_url())
