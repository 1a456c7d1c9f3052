"""Requests travel in groups: one sender per API process puts whatever waits into one message.

Alone, a request waits for nobody; under load, the cost of a message (and of what the broker, the worker and
the result backend do per message) is shared by the whole group. ``SyncGroups`` sends sync requests as
``predict_match_group`` messages on ``ml.interactive`` and fans the one result out; ``AsyncGroups`` sends async
submissions of stored matches as ``predict_matches`` chunks on ``ml`` and answers each once the broker has
confirmed its chunk (group commit). Each is given what it needs: the task records, a publish function and, for
sync, the result listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from matchcast.api.listener import ResultListener
from matchcast.errors import MatchcastError, PredictionFailed, PredictionTimeout, ServiceUnavailable
from matchcast.metrics import SYNC_GROUP_SIZE
from matchcast.tasks.messages import TaskMessage, predict_chunk, predict_group
from matchcast.tasks.records import TaskRecords
from matchcast.tasks.status import READY_STATES, answer_error, outcome

log = logging.getLogger("matchcast.api")
SEND_GRACE_S = 5.0  # a sync caller's backstop beyond its timeout, should the broker hang while confirming
SUBMIT_TIMEOUT_S = 10.0  # an async submission is refused (503) if its message is not confirmed by then

Publish = Callable[..., Awaitable[None]]  # publish(*messages): confirmed by the broker, or ServiceUnavailable
T = TypeVar("T")
R = TypeVar("R")


def fail(futures: list[Any], exc: Exception) -> None:
    """Answer every caller still waiting with ``exc``."""
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)


class _Groups(Generic[T, R]):
    """One sender per API process: whatever waits goes out together while the previous group is confirmed."""

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
                fail([fut for _, fut in group], exc)
            except Exception as exc:  # never leave a caller without an answer
                log.exception("%s group of %d could not be sent", self.name, len(group))
                fail([fut for _, fut in group], PredictionFailed(f"could not send: {type(exc).__name__}"))

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
        fail([fut for _, fut in self.waiting], ServiceUnavailable("the API is shutting down", ["api"]))


class SyncGroups(_Groups[dict[str, Any], dict[str, Any]]):
    """Sync requests as grouped ``predict_match_group`` messages on ``ml.interactive``; the one result fanned out.

    Each request keeps its own deadline; the message expires with the callers' patience.

    At most ``in_flight`` groups are out at a time (sent and not yet answered). Requests that arrive meanwhile
    wait for the next group, so group sizes follow the load: without the cap, a fast API sends a trickle of
    small groups that queue up in ``ml.interactive``, and the worker pays a task's fixed cost for each.
    """

    def __init__(
        self,
        records: TaskRecords,
        publish: Publish,
        listener: ResultListener,
        *,
        max_group: int,
        timeout: float,
        in_flight: int = 2,
    ) -> None:
        super().__init__(max_group, "sync")
        self.records, self.publish, self.listener = records, publish, listener
        self.timeout, self.in_flight = timeout, in_flight
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
        task_id = str(uuid.uuid4())
        message = predict_group([payload for payload, _ in group], task_id, expires=self.timeout)
        result = self.listener.expect(task_id)  # listen before sending so the result cannot slip by
        try:  # recorded: a 504 names the group's task, whose status then shows it expired
            await self.records.issue([task_id], "sync", lambda: self.publish(message))
        except BaseException:
            self.listener.forget(task_id)
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
                    meta = await self.records.meta(task_id)
            if meta is None or meta.get("status") not in READY_STATES:
                fail(futures, PredictionTimeout(f"no prediction within {self.timeout:g} s (task {task_id})"))
                return
            answers: Any = outcome(meta)
            if not isinstance(answers, list) or len(answers) != len(futures):
                raise PredictionFailed("the worker answered a group with the wrong number of results")
            for fut, answer in zip(futures, answers, strict=True):
                if fut.done():
                    continue
                if isinstance(answer, dict) and isinstance(answer.get("prediction"), dict):
                    fut.set_result(answer["prediction"])
                else:
                    fut.set_exception(answer_error(answer))
            await self.records.forget(task_id)  # delivered: nobody reads it again
        except MatchcastError as exc:
            fail(futures, exc)
        finally:
            self.listener.forget(task_id)
            fail(futures, PredictionFailed("no answer for this request"))  # only those still waiting

    async def close(self) -> None:
        await super().close()
        for task in list(self._deliveries):
            task.cancel()


_Submission = tuple[str | None, str, int, float | None]  # idempotency key (or None), task id, match id, deadline
_Item = tuple[_Submission, asyncio.Future[tuple[str, bool]]]


class AsyncGroups(_Groups[_Submission, tuple[str, bool]]):
    """Async submissions of stored matches as ``predict_matches`` chunks on ``ml`` (group commit).

    A group claims its idempotency keys in one Redis round trip, records the new task ids in a second, and
    sends the new tasks as one message. A caller hears 202 only once the broker has confirmed the message that
    carries its task: nothing accepted is lost if the API dies a moment later.
    """

    def __init__(self, records: TaskRecords, publish: Publish, max_group: int) -> None:
        super().__init__(max_group, "async")
        self.records, self.publish = records, publish

    async def submit(
        self, key: str | None, task_id: str, match_id: int, deadline: float | None = None
    ) -> tuple[str, bool]:
        """Queue ``task_id`` (predicting ``match_id``, by ``deadline`` if given) under the idempotency ``key``.

        Returns ``(task_id, True)`` once it is queued, or ``(other, False)`` when ``key`` already pointed at
        ``other`` (``""``: the key expired in between); ``ServiceUnavailable`` if the broker did not confirm in time.
        """
        try:
            return await asyncio.wait_for(self._enqueue((key, task_id, match_id, deadline)), SUBMIT_TIMEOUT_S)
        except TimeoutError:
            raise ServiceUnavailable(f"the broker did not confirm within {SUBMIT_TIMEOUT_S:g} s", ["broker"]) from None

    async def _send(self, group: list[_Item]) -> None:
        keyed = [(key, task_id) for (key, task_id, _, _), _ in group if key is not None]
        claims = iter(await self.records.claim_many(keyed) if keyed else [])
        new: list[_Item] = []
        taken: list[tuple[asyncio.Future[tuple[str, bool]], str]] = []
        for item, fut in group:
            won, holder = next(claims) if item[0] is not None else (True, "")
            if won:
                new.append((item, fut))
            else:  # the key points at another task (or expired in between: the caller claims again)
                taken.append((fut, holder))
        if new:
            try:
                await self._queue(new)
            except MatchcastError as exc:
                fail([fut for _, fut in new], exc)
                failed = {item[1] for item, _ in new}
                fail([fut for fut, other in taken if other in failed], exc)
        for fut, other in taken:
            if not fut.done():
                fut.set_result((other, False))

    async def _queue(self, new: list[_Item]) -> None:
        items = [(task_id, match_id) for (_, task_id, match_id, _), _ in new]
        deadlines = {task_id: by for (_, task_id, _, by), _ in new if by is not None}
        message: TaskMessage = predict_chunk(items, batch=False, deadlines=deadlines)
        claimed = [key for (key, _, _, _), _ in new if key]
        await self.records.issue([t for t, _ in items], "async", lambda: self.publish(message), undo=claimed)
        for (_, task_id, _, _), fut in new:
            if not fut.done():
                fut.set_result((task_id, True))
