"""Sending ``predict_match`` by name and hearing its result: one Redis listener per API process.

Sync requests travel in groups: every request an API process has waiting goes out in one ``predict_match``
message on ``ml.interactive`` while the previous one is being confirmed by the broker, and the worker answers
the group with one result that the listener fans out. Alone, a request waits for nobody; under load, the cost
of a message, a task and a result is shared by everyone in the group.

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
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from amqp.exceptions import AMQPError
from celery import Celery
from kombu import Connection
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from matchcast.config import INTERACTIVE_QUEUE, ML_QUEUE, PREDICT_TASK, Settings
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
from matchcast.metrics import DEAD_LETTERS, QUEUE_DEPTH, SYNC_GROUP_SIZE
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
SEND_GRACE_S = 5.0  # a sync caller's backstop beyond its timeout, should the broker hang while confirming
SUBMIT_TIMEOUT_S = 10.0  # an async submission is refused (503) if its message is not confirmed by then
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


def queue_depth(settings: Settings, conn: Connection, queue: str = ML_QUEUE) -> tuple[int, int | None]:
    """Messages waiting in ``queue`` (``ml`` by default) and, on RabbitMQ, its consumers."""
    conn.ensure_connection(max_retries=1, timeout=settings.readiness_timeout_s)
    if conn.transport.driver_type == "amqp":
        try:
            _, depth, consumers = conn.default_channel.queue_declare(queue, passive=True)
        except AMQPError:  # not declared yet: nothing waits, nobody consumes
            conn.close()
            return 0, 0
        return int(depth), int(consumers)
    client: Any = conn.default_channel.client  # type: ignore[attr-defined]
    return int(client.llen(queue)), None


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


T = TypeVar("T")
R = TypeVar("R")


class _Groups(Generic[T, R]):
    """One sender per API process: whatever waits goes out together while the previous group is confirmed.

    Alone, an item waits for nobody; under load, the cost of a message (and of what the broker, the worker and
    the result backend do per message) is shared by the whole group.
    """

    def __init__(self, max_group: int, name: str) -> None:
        self.max_group, self.name = max_group, name
        self.waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._sender: asyncio.Task[None] | None = None

    def _enqueue(self, item: T) -> asyncio.Future[R]:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, fut))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(), name=f"matchcast-{self.name}-sender")
        return fut

    async def _send_all(self) -> None:
        while self.waiting:
            await self._ready()
            group = [(item, fut) for item, fut in self.waiting[: self.max_group] if not fut.done()]
            del self.waiting[: self.max_group]
            if not group:
                continue
            try:
                await self._send(group)
            except MatchcastError as exc:
                _fail([fut for _, fut in group], exc)
            except Exception as exc:  # never leave a caller without an answer
                log.exception("%s group of %d could not be sent", self.name, len(group))
                _fail([fut for _, fut in group], PredictionFailed(f"could not send: {type(exc).__name__}"))

    async def _ready(self) -> None:
        """Return when the next group may go (at once by default)."""

    async def _send(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop sending; whoever still waits gets an error or their timeout."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender
        _fail([fut for _, fut in self.waiting], ServiceUnavailable("the API is shutting down", ["api"]))


class SyncGroups(_Groups[dict[str, Any], dict[str, Any]]):
    """Sync requests as grouped ``predict_match`` messages on ``ml.interactive``; the one result fanned out.

    Each request keeps its own deadline; the message expires with the callers' patience.

    At most ``in_flight`` groups are out at a time (sent and not yet answered). Requests that arrive meanwhile
    wait for the next group, so group sizes follow the load: without the cap, a fast API sends a trickle of
    small groups that queue up in ``ml.interactive``, and the worker pays a task's fixed cost for each.
    """

    def __init__(self, dispatcher: Dispatcher, max_group: int, timeout: float, in_flight: int = 2) -> None:
        super().__init__(max_group, "sync")
        self.dispatcher, self.timeout, self.in_flight = dispatcher, timeout, in_flight
        self._deliveries: set[asyncio.Task[None]] = set()

    async def _ready(self) -> None:
        while True:
            out = [d for d in self._deliveries if not d.done()]
            if len(out) < self.in_flight:
                return
            await asyncio.wait(out, return_when=asyncio.FIRST_COMPLETED)

    async def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The prediction for ``payload`` within the timeout, else ``PredictionTimeout`` naming the task.

        The group's delivery answers at the timeout; the wait here is only a backstop should sending hang.
        """
        try:
            return await asyncio.wait_for(self._enqueue(payload), self.timeout + SEND_GRACE_S)
        except TimeoutError:
            raise PredictionTimeout(f"no prediction within {self.timeout:g} s") from None

    async def _send(self, group: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]) -> None:
        listener = self.dispatcher.listener
        task_id = str(uuid.uuid4())
        result = listener.expect(task_id)  # listen before sending so the result cannot slip by
        try:
            await self.dispatcher._issue(task_id, "sync")  # a 504 names it; its status shows it expired
            await run_in_threadpool(
                self.dispatcher.celery.send_task,
                PREDICT_TASK,
                args=[[payload for payload, _ in group]],
                task_id=task_id,
                queue=INTERACTIVE_QUEUE,
                expires=self.timeout,  # after the callers' patience, nobody runs it
                headers={"submitted_at": time.time()},
            )
        except BROKER_ERRORS as exc:
            listener.forget(task_id)
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc
        except BaseException:
            listener.forget(task_id)
            raise
        SYNC_GROUP_SIZE.observe(len(group))
        delivery = asyncio.create_task(self._deliver(task_id, result, [fut for _, fut in group]))  # noqa: RUF006
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(
        self, task_id: str, result: asyncio.Future[dict[str, Any]], futures: list[asyncio.Future[dict[str, Any]]]
    ) -> None:
        try:
            try:
                meta: dict[str, Any] | None = await asyncio.wait_for(asyncio.shield(result), self.timeout)
            except TimeoutError:
                meta = None
                with contextlib.suppress(MatchcastError):
                    meta = await self.dispatcher._read_meta(task_id)
            if meta is None or meta.get("status") not in READY_STATES:
                _fail(futures, PredictionTimeout(f"no prediction within {self.timeout:g} s (task {task_id})"))
                return
            answers: Any = self.dispatcher._outcome(meta)
            if not isinstance(answers, list) or len(answers) != len(futures):
                raise PredictionFailed("the worker answered a group with the wrong number of results")
            for fut, answer in zip(futures, answers, strict=True):
                if fut.done():
                    continue
                if isinstance(answer, dict) and isinstance(answer.get("prediction"), dict):
                    fut.set_result(answer["prediction"])
                else:
                    fut.set_exception(_answer_error(answer))
            with contextlib.suppress(RedisError):  # delivered: nobody reads it again
                await self.dispatcher.redis.unlink(RESULT_KEY + task_id, task_key(task_id))
        except MatchcastError as exc:
            _fail(futures, exc)
        finally:
            self.dispatcher.listener.forget(task_id)
            _fail(futures, PredictionFailed("no answer for this request"))  # only those still waiting

    async def close(self) -> None:
        await super().close()
        for task in list(self._deliveries):
            task.cancel()


_Item = tuple[tuple[str | None, str, int], asyncio.Future[tuple[str, bool]]]


class AsyncGroups(_Groups[tuple[str | None, str, int], tuple[str, bool]]):
    """Async submissions of stored matches as ``predict_matches`` chunks on ``ml`` (group commit).

    A group claims its idempotency keys in one Redis round trip, records the new task ids in a second, and
    sends the new tasks as one message. A caller hears 202 only once the broker has confirmed the message that
    carries its task: nothing accepted is lost if the API dies a moment later.
    """

    def __init__(self, dispatcher: Dispatcher, max_group: int) -> None:
        super().__init__(max_group, "async")
        self.dispatcher = dispatcher

    async def submit(self, key: str | None, task_id: str, match_id: int) -> tuple[str, bool]:
        """Queue ``task_id`` (predicting ``match_id``) under the idempotency ``key``.

        Returns ``(task_id, True)`` once it is queued, or ``(other, False)`` when ``key`` already pointed at
        ``other``; ``ServiceUnavailable`` if the broker did not confirm in time.
        """
        try:
            return await asyncio.wait_for(self._enqueue((key, task_id, match_id)), SUBMIT_TIMEOUT_S)
        except TimeoutError:
            raise ServiceUnavailable(f"the broker did not confirm within {SUBMIT_TIMEOUT_S:g} s", ["broker"]) from None

    async def _send(self, group: list[_Item]) -> None:
        d = self.dispatcher
        ttl = d.settings.task_ttl_s
        keyed = [(key, task_id) for (key, task_id, _), _ in group if key is not None]
        claims: list[Any] = []
        if keyed:
            try:
                async with d.redis.pipeline(transaction=False) as pipe:
                    for key, task_id in keyed:
                        pipe.set(key, task_id, nx=True, ex=ttl)
                        pipe.get(key)
                    claims = await pipe.execute()
            except RedisError as exc:
                raise _backend_down(exc) from exc
        answers = iter(zip(claims[::2], claims[1::2], strict=True))
        new: list[_Item] = []
        taken: list[tuple[asyncio.Future[tuple[str, bool]], str]] = []
        for item, fut in group:
            won, raw = next(answers) if item[0] is not None else (True, None)
            if won:
                new.append((item, fut))
            else:  # the key points at another task (or expired in between: the caller claims again)
                taken.append((fut, raw.decode() if isinstance(raw, bytes) else str(raw or "")))
        if new:
            try:
                await self._queue(new)
            except MatchcastError as exc:
                _fail([fut for _, fut in new], exc)
                failed = {item[1] for item, _ in new}
                _fail([fut for fut, other in taken if other in failed], exc)
        for fut, other in taken:
            if not fut.done():
                fut.set_result((other, False))

    async def _queue(self, new: list[_Item]) -> None:
        d = self.dispatcher
        items: list[tuple[str, int]] = [(task_id, match_id) for (_, task_id, match_id), _ in new]
        meta = json.dumps({"source": "async", "issued_at": time.time()})
        try:
            async with d.redis.pipeline(transaction=False) as pipe:
                for task_id, _ in items:
                    pipe.set(task_key(task_id), meta, ex=d.settings.task_ttl_s)
                await pipe.execute()
            await run_in_threadpool(
                d.celery.send_task,
                BULK_TASK,
                args=[{"items": items}],
                queue=ML_QUEUE,
                headers={"submitted_at": time.time()},
            )
        except BROKER_ERRORS as exc:
            with contextlib.suppress(RedisError):
                keys = [key for (key, _, _), _ in new if key] + [task_key(task_id) for task_id, _ in items]
                await d.redis.delete(*keys)
            if isinstance(exc, RedisError):
                raise _backend_down(exc) from exc
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc
        for (_, task_id, _), fut in new:
            if not fut.done():
                fut.set_result((task_id, True))


def _fail(futures: list[Any], exc: Exception) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)


def _answer_error(answer: Any) -> MatchcastError:
    if not isinstance(answer, dict):
        return PredictionFailed("the worker sent an answer of the wrong shape")
    detail = str(answer.get("detail", "prediction failed"))
    err = _ERRORS.get(str(answer.get("error", "")))
    return err(detail) if err is not None else PredictionFailed(f"{answer.get('error')}: {detail}")


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
        self.groups = SyncGroups(self, settings.sync_group_max, settings.sync_timeout_s, settings.sync_groups_in_flight)
        self.async_groups = AsyncGroups(self, BULK_CHUNK)

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
        await self.groups.close()
        await self.async_groups.close()
        await self.listener.stop()
        await self.backlog.stop()
        await self.redis.aclose()
        await run_in_threadpool(self.celery.close)

    async def _issue(self, task_id: str, source: str) -> None:
        """Record that ``task_id`` was issued (status polls of ids never issued are 404)."""
        meta = json.dumps({"source": source, "issued_at": time.time()})
        try:
            await self.redis.set(task_key(task_id), meta, ex=self.settings.task_ttl_s)
        except RedisError as exc:
            raise _backend_down(exc) from exc

    async def _send(self, task_id: str, payload: dict[str, Any], *, expires: float | None, source: str) -> None:
        await self._issue(task_id, source)
        try:
            await run_in_threadpool(
                self.celery.send_task,
                PREDICT_TASK,
                args=[payload],
                task_id=task_id,
                queue=INTERACTIVE_QUEUE if source == "sync" else ML_QUEUE,
                expires=expires,
                headers={"submitted_at": time.time()},
            )
        except BROKER_ERRORS as exc:
            with contextlib.suppress(RedisError):
                await self.redis.delete(task_key(task_id))
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}", ["broker"]) from exc

    def _admit(self) -> None:
        depth = self.backlog.depth
        if depth is not None and depth >= self.settings.max_backlog:
            raise Overloaded(f"{depth} messages are waiting in {ML_QUEUE} (limit {self.settings.max_backlog})")

    async def _existing(self, key: str, task_id: str) -> str | None:
        """Claim ``key`` for ``task_id`` (None), or the live task it already points at (one round trip).

        A key pointing at a failed or cancelled task is taken over: that work may be asked for again.
        """
        for _ in range(3):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(key, task_id, nx=True, ex=self.settings.task_ttl_s)
                    pipe.get(key)
                    won, raw = await pipe.execute()
            except RedisError as exc:
                raise _backend_down(exc) from exc
            if won:
                return None
            if not raw:  # expired in between: try again
                continue
            existing = raw.decode() if isinstance(raw, bytes) else str(raw)
            meta = await self._read_meta(existing)
            if meta is None or meta.get("status") not in ("FAILURE", "REVOKED"):
                return existing
            with contextlib.suppress(RedisError):
                await self.redis.delete(key)
        raise ServiceUnavailable("could not claim the idempotency key; try again", ["result_backend"])

    async def _claim(self, key: str | None, task_id: str, send: Callable[[], Awaitable[None]], *, source: str) -> str:
        """Run ``send`` for ``task_id``, or return the live task an idempotency key already points at."""
        if key is not None:
            existing = await self._existing(key, task_id)
            if existing is not None:
                return existing
        try:
            if source != "sync":
                self._admit()
            await send()
        except BaseException:
            if key is not None:
                with contextlib.suppress(RedisError):
                    await self.redis.delete(key)
            raise
        return task_id

    async def _submit_grouped(self, key: str | None, task_id: str, match_id: int) -> str:
        """A stored match through the async groups; the key is claimed with the group, in one round trip."""
        self._admit()
        for _ in range(3):
            claimed, new = await self.async_groups.submit(key, task_id, match_id)
            if new:
                return claimed
            if not claimed or key is None:  # the key expired in between: claim again
                continue
            meta = await self._read_meta(claimed)
            if meta is None or meta.get("status") not in ("FAILURE", "REVOKED"):
                return claimed
            with contextlib.suppress(RedisError):  # a failed or cancelled task: that work may be asked for again
                await self.redis.delete(key)
        raise ServiceUnavailable("could not claim the idempotency key; try again", ["result_backend"])

    async def submit(
        self, payload: dict[str, Any], *, idempotency_key: str | None = None, callback_url: str | None = None
    ) -> str:
        """Queue a prediction and return its task id at once (the same id for a repeated idempotent request).

        A stored match without a callback joins the next ``ml`` group; with ``callback_url``, the prediction is
        a task of its own whose final status is POSTed there (signed) when it ends.
        """
        key = f"{IDEMPOTENCY_KEY}async:{idempotency_key}" if idempotency_key else None
        task_id = str(uuid.uuid4())
        match_id = payload.get("match_id")
        if callback_url is None and isinstance(match_id, int) and set(payload) == {"match_id"}:
            return await self._submit_grouped(key, task_id, match_id)
        if callback_url is not None:
            key = f"{key}:cb:{payload_digest({'url': callback_url})}" if key else None
            body = CallbackStatus(url=callback_url).model_dump_json()
            try:  # registered before sending, so a fast task cannot finish unnoticed
                await self.redis.set(callback_key(task_id), body, ex=self.settings.task_ttl_s)
            except RedisError as exc:
                raise _backend_down(exc) from exc

        def send() -> Awaitable[None]:
            return self._send(task_id, payload, expires=None, source="async")

        claimed = await self._claim(key, task_id, send, source="async")
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

        With an idempotency key, a request repeated while its task lives waits for that task instead (a task of
        its own); without one, the request joins the next group.
        """
        if idempotency_key is None and timeout == self.groups.timeout:
            return await self.groups.predict(payload)
        key = f"{IDEMPOTENCY_KEY}sync:{idempotency_key}:{payload_digest(payload)}" if idempotency_key else None
        task_id = str(uuid.uuid4())
        fut = self.listener.expect(task_id)  # listen before sending so the result cannot slip by

        def send() -> Awaitable[None]:  # the task expires with the caller's patience: after a 504 nobody runs it
            return self._send(task_id, payload, expires=timeout, source="sync")

        try:
            claimed = await self._claim(key, task_id, send, source="sync")
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
