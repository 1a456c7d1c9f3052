"""Dead-lettering in the worker: publish what is given up on to ``ml.dead``; collect ``ml.dead`` into the store.

Every dead letter travels through the broker's durable ``ml.dead`` queue first: the worker that gives up on a task
publishes it there (so a database outage cannot lose it), and RabbitMQ itself routes there what ``ml`` rejects or
redelivers past its delivery limit. A collector thread in each worker's main process moves ``ml.dead`` into the
store's ``dead_letters`` table, acknowledging a message only once it is stored, and marks the task's result
``DeadLettered`` so that status polls and synchronous waiters learn of it.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu import Connection, Message
from redis.exceptions import RedisError

from matchcast.config import Settings
from matchcast.data.dead_letters import DeadLetters
from matchcast.errors import DeadLettered
from matchcast.metrics import DEAD_LETTERS_RECORDED
from matchcast.service.wiring import store_for
from matchcast.tasks.celery_app import dead_queue
from matchcast.tasks.fairshare import release_chunks
from matchcast.tasks.messages import deliver_callback, enqueue
from matchcast.tasks.names import BULK_TASK, DEAD_QUEUE, PREDICT_TASK

if TYPE_CHECKING:
    from matchcast.worker.app import WorkerRuntime

log = logging.getLogger("matchcast.worker.dead_letters")
MARKER = "matchcast_dead_letter"


def publish_dead_letter(
    app: Celery,
    *,
    task_id: str,
    task_name: str,
    args: Any,
    reason: str,
    error: str,
    attempts: int,
    batch: str | None = None,
) -> None:
    """Put one dead letter on ``ml.dead`` (persistent, confirmed where the broker confirms); ``batch``: the batch
    its tasks belong to (the collector names them in the batch's event stream)."""
    body = {
        MARKER: 1,
        "task_id": task_id,
        "task_name": task_name,
        "args": args,
        "reason": reason,
        "error": error[:2000],
        "attempts": attempts,
    }
    if batch:
        body["batch"] = batch
    q = dead_queue()
    with app.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange=q.exchange,
            routing_key=DEAD_QUEUE,
            declare=[q],
            serializer="json",
            delivery_mode=2,
            retry=True,
            retry_policy={"max_retries": 10, "interval_max": 2},
        )
    for one in split_bulk(body):
        log.warning(
            "dead_lettered task_id=%s%s reason=%s attempts=%d error=%s",
            one["task_id"],
            f" chunk={task_id}" if one["task_id"] != task_id else "",
            reason,
            attempts,
            error[:200],
        )


def release_share(chunk_id: str) -> None:
    """A batch chunk is done or given up on: its key's fair share of the bulk lane is released (once)."""
    from matchcast.worker.app import runtime

    try:
        release_chunks(runtime().app.backend.client, [chunk_id])
    except RedisError as exc:  # the share expires with the task TTL; the work itself is done
        log.warning("could not release the fair share of chunk=%s: %s", chunk_id, exc)


def split_bulk(letter: dict[str, Any]) -> list[dict[str, Any]]:
    """A dead ``predict_matches`` chunk as one ``predict_match`` letter per task it carried, else the letter.

    Each task of a chunk then reads DEAD_LETTERED under its own id and can be replayed on its own, like any
    other ``predict_match``; recording is idempotent per task id, so a collector that dies half way through a
    chunk and sees it again records nothing twice.
    """
    args = letter.get("args")
    payload = args[0] if isinstance(args, list) and args else None
    items = payload.get("items") if isinstance(payload, dict) else None
    if letter.get("task_name") != BULK_TASK or not isinstance(items, list):
        return [letter]
    tasks = [i for i in items if isinstance(i, list) and len(i) == 2 and isinstance(i[0], str)]
    if not tasks:
        return [letter]
    return [{**letter, "task_id": t, "task_name": PREDICT_TASK, "args": [{"match_id": m}]} for t, m in tasks]


def raw_body_text(message: Message) -> str:
    """A printable form of a message body that could not be decoded."""
    body = message.body
    if isinstance(body, bytes):
        try:
            return body[:1000].decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(body[:750]).decode()
    return str(body)[:1000]


def _from_broker(message: Message, settings: Settings) -> dict[str, Any]:
    """A dead letter from a raw task message that RabbitMQ dead-lettered (rejected or over the delivery limit)."""
    headers = message.headers or {}
    deaths = headers.get("x-death") or []
    reason = str(headers.get("x-first-death-reason") or (deaths[0].get("reason") if deaths else "rejected"))
    if reason == "delivery_limit":
        error = f"redelivered more than {settings.delivery_limit} times (worker lost each time?)"
    else:
        error = f"rejected by the broker or worker ({reason})"
    try:
        decoded = json.loads(message.body) if message.content_type == "application/json" else None
    except (ValueError, TypeError):
        decoded = None
    args = decoded[0] if isinstance(decoded, list) and decoded else {"raw": raw_body_text(message)}
    return {
        "task_id": str(headers.get("id") or message.properties.get("correlation_id") or message.delivery_tag),
        "task_name": str(headers.get("task") or "unknown"),
        "args": args,
        "reason": reason,
        "error": error,
        "attempts": int(headers.get("x-delivery-count") or settings.delivery_limit + 1),
        "batch": headers.get("batch"),
    }


class DeadLetterCollector:
    """Moves ``ml.dead`` into the store, one message at a time, acking only what is stored."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.app, self.settings, self.runtime = runtime.app, runtime.settings, runtime
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="matchcast-dead-letters", daemon=True)

    def start(self) -> None:
        """Start collecting in the background."""
        self.thread.start()

    def _store(self, letter: dict[str, Any]) -> None:
        batch = letter.pop("batch", None)
        letters = split_bulk(letter)
        for one in letters:
            DeadLetters(store_for(self.settings)).record(**one)
            DEAD_LETTERS_RECORDED.labels(reason=one["reason"]).inc()
            err = DeadLettered(f"dead-lettered ({one['reason']}): {one['error']}")
            self.app.backend.mark_as_failure(one["task_id"], err)
            if one["reason"] == "delivery_limit" and self.runtime.records.has_callback(one["task_id"]):
                enqueue(self.app, deliver_callback(one["task_id"]))  # no worker returned from this task
        if isinstance(batch, str) and batch:  # its event stream (and so its watchers) hear of them too
            self.runtime.records.dead_lettered(batch, [one["task_id"] for one in letters])
        if letter.get("task_name") == BULK_TASK:  # a chunk no worker returned from gives back its fair share
            release_share(letter["task_id"])

    def _not_dead(self, message: Message, task_id: str) -> str | None:
        """Why a message the broker dead-lettered is no dead letter after all, or None."""
        headers = message.headers or {}
        if headers.get("x-first-death-reason") == "expired":
            return "expired (its caller had given up)"
        expires = headers.get("expires")
        if expires:
            try:
                if datetime.fromisoformat(str(expires)) <= datetime.now(UTC):
                    return "expired (its caller had given up)"
            except ValueError:
                pass
        if self.runtime.records.cancelled([task_id]):
            return "was cancelled"
        state = self.app.backend.get_task_meta(task_id).get("status")
        return f"is {state}" if state in ("REVOKED", "SUCCESS") else None

    def _handle(self, message: Message) -> None:
        body: Any = None
        if message.content_type == "application/json":
            try:
                body = json.loads(message.body)
            except (ValueError, TypeError):
                body = None
        if isinstance(body, dict) and body.get(MARKER):
            letter = {k: body[k] for k in ("task_id", "task_name", "args", "reason", "error", "attempts")}
            if body.get("batch"):
                letter["batch"] = body["batch"]
        else:
            letter = _from_broker(message, self.settings)
            # Revoked (cancelled or expired) tasks are rejected on purpose, and a task that succeeded on another
            # delivery is done: neither is a dead letter.
            why = self._not_dead(message, letter["task_id"])
            if why:
                log.info("not a dead letter: task_id=%s %s", letter["task_id"], why)
                if why.startswith("expired"):  # the broker dropped it unrun: say so, as a worker would have
                    self.app.backend.mark_as_revoked(letter["task_id"], reason="expired")
                return
        self._store(letter)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with Connection(self.settings.resolved_broker_url(), connect_timeout=5) as conn:
                    queue = dead_queue()(conn.default_channel)
                    queue.declare()
                    while not self.stop.is_set():
                        # A raw get: bodies are never deserialised here except as JSON (a pickled poison message
                        # dead-lettered by the broker must not be unpickled by its collector either).
                        message = queue.get(no_ack=False)
                        if message is None:
                            self.stop.wait(1)
                            continue
                        try:
                            self._handle(message)
                        except Exception as exc:  # the store may be away: keep the message, try later
                            log.warning("could not store a dead letter yet (%s); will retry", exc)
                            message.requeue()
                            self.stop.wait(2)
                            continue
                        message.ack()
            except Exception as exc:  # broker away: reconnect
                log.warning("dead-letter collector lost the broker (%s); reconnecting", exc)
                self.stop.wait(2)
