"""Tasks: decode, call the service, return JSON. Transient failures retry with backoff; the rest dead-letter."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import orjson
import redis
import sqlalchemy.exc
from celery import Celery, Task
from celery.exceptions import Ignore

from matchcast.config import Settings
from matchcast.errors import InvalidInput, NotFound, ServiceUnavailable
from matchcast.metrics import TASK_DURATION, TASK_QUEUE_WAIT, TASKS, TASKS_EXPIRED
from matchcast.service.callbacks import post_callback
from matchcast.tasks.messages import deliver_callback as callback_message
from matchcast.tasks.messages import enqueue
from matchcast.tasks.names import (
    BULK_TASK,
    CALLBACK_TASK,
    GROUP_MAX,
    INTERACTIVE_QUEUE,
    PREDICT_GROUP_TASK,
    PREDICT_TASK,
)
from matchcast.tasks.status import task_status
from matchcast.worker.app import runtime
from matchcast.worker.dead_letters import publish_dead_letter, release_share

log = logging.getLogger("matchcast.worker.tasks")

# Failures that may pass if tried again a little later (a database or backend restarting, a network blip).
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    ServiceUnavailable,
)


class PredictTask(Task):
    """Bounded retries with exponential backoff and jitter; dead letter when given up on."""

    autoretry_for = TRANSIENT  # max_retries and retry_backoff_max come from settings (``register``)
    retry_backoff = 1
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Unknown matches are ordinary answers; anything else is kept as a dead letter."""
        if isinstance(exc, NotFound):
            return
        reason = "rejected" if isinstance(exc, InvalidInput) else "retries_exhausted"
        batch = self.request.get("batch")
        publish_dead_letter(
            self.app,
            task_id=task_id,
            task_name=self.name,
            args=list(args),
            reason=reason,
            error=f"{type(exc).__name__}: {exc}",
            attempts=int(self.request.retries or 0) + 1,
            batch=batch if isinstance(batch, str) else None,
        )
        if self.name == BULK_TASK:
            release_share(task_id)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """On a final state, deliver the completion callback (after dead-lettering has had a moment)."""
        if status == "SUCCESS":
            schedule_callback(task_id)
        elif status == "FAILURE":
            schedule_callback(task_id, countdown=2)


def schedule_callback(task_id: str, countdown: float = 0) -> None:
    """Queue the delivery of a task's completion callback, if it has one."""
    rt = runtime()
    try:
        if not rt.records.has_callback(task_id):
            return
    except redis.exceptions.RedisError:
        log.warning("could not check the callback of task_id=%s", task_id)
        return
    enqueue(rt.app, callback_message(task_id, countdown=countdown))


def _note_queue_wait(task: Task) -> None:
    submitted = task.request.get("submitted_at")
    if isinstance(submitted, int | float) and not task.request.retries:
        TASK_QUEUE_WAIT.observe(max(0.0, time.time() - submitted))


def deadlines_of(task: Task) -> dict[str, float]:
    """The message's ``deadlines`` header: task id -> Unix time (none if absent or malformed)."""
    raw = task.request.get("deadlines")
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}


def late(deadlines: dict[str, float], task_ids: Any) -> dict[str, float]:
    """Which of these tasks are past their deadline now (task id -> its deadline)."""
    if not deadlines:
        return {}
    now = time.time()
    return {t: deadlines[t] for t in task_ids if t in deadlines and deadlines[t] < now}


def _source_of(task: Task) -> str:
    """The prediction log's source of a single task: sync when it came on the interactive queue."""
    info = task.request.delivery_info or {}
    return "sync" if info.get("routing_key") == INTERACTIVE_QUEUE else "async"


def predict_match(self: PredictTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Predict one match: ``{"match_id": N}`` or inline ``{"features": {...}, ...}`` (the design note's task)."""
    task_id = self.request.id
    if not self.request.retries and runtime().records.starting([task_id]):
        TASKS.labels(outcome="cancelled").inc()
        log.info("task_cancelled task_id=%s", task_id)
        self.backend.mark_as_revoked(task_id, reason="cancelled")  # started was recorded on receipt
        raise Ignore()
    expired = late(deadlines_of(self), [task_id])
    if expired:
        runtime().records.expire(task_id, expired[task_id], self.backend.encode)
        TASKS_EXPIRED.labels(task=PREDICT_TASK).inc()
        log.info("task_expired task_id=%s deadline=%s", task_id, expired[task_id])
        schedule_callback(task_id)  # the callback hears the final state, as of any other ending
        raise Ignore()
    _note_queue_wait(self)
    started = time.perf_counter()
    try:
        if not isinstance(payload, dict):
            raise InvalidInput(f"payload must be a JSON object (grouped requests are {PREDICT_GROUP_TASK})")
        result = runtime().service().predict(payload, source=_source_of(self))
    except NotFound:
        TASKS.labels(outcome="not_found").inc()
        raise
    except InvalidInput:
        TASKS.labels(outcome="rejected").inc()
        raise
    except TRANSIENT:
        TASKS.labels(outcome="retried" if self.request.retries < self.max_retries else "failed").inc()
        raise
    except Exception:
        TASKS.labels(outcome="failed").inc()
        raise
    TASKS.labels(outcome="succeeded").inc()
    TASK_DURATION.observe(time.perf_counter() - started)
    return result


def predict_match_group(task: PredictTask, envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """Predict grouped sync requests, ``{"requests": [payload, ...]}``, in one vectorised pass.

    The result is a list in the same order, each ``{"prediction": ...}`` or ``{"error": type, "detail": text}``:
    one bad request does not fail the others.
    """
    payloads = envelope.get("requests") if isinstance(envelope, dict) else None
    if not isinstance(payloads, list) or not payloads or len(payloads) > GROUP_MAX:
        TASKS.labels(outcome="rejected").inc()
        raise InvalidInput(f"a group is {{'requests': [payload, ...]}} with 1 to {GROUP_MAX} payloads")
    _note_queue_wait(task)
    started = time.perf_counter()
    try:
        out = runtime().service().predict_each(payloads, source="sync")
    except TRANSIENT:
        TASKS.labels(outcome="retried" if task.request.retries < task.max_retries else "failed").inc(len(payloads))
        raise
    errors = [entry["error"] for entry in out if "error" in entry]
    TASKS.labels(outcome="succeeded").inc(len(out) - len(errors))
    if errors:
        TASKS.labels(outcome="not_found").inc(sum(e in ("MatchNotFound", "FeaturesNotReady") for e in errors))
        TASKS.labels(outcome="rejected").inc(sum(e == "InvalidInput" for e in errors))
    TASK_DURATION.observe(time.perf_counter() - started)
    return out


def deliver_callback(self: Task, task_id: str) -> bool:
    """POST a task's final status to its callback URL; retried with backoff up to the configured attempts."""
    rt = runtime()
    settings = rt.settings
    callback = rt.records.callback(task_id)
    if callback is None:
        return False
    if callback.delivered:
        return True
    meta = rt.app.backend.get_task_meta(task_id)
    status = task_status(task_id, meta if meta.get("status") != "PENDING" else None)
    body = status.model_dump_json(exclude={"callback"}).encode()
    attempt = post_callback(settings, callback.url, body, task_id=task_id, attempt=len(callback.attempts) + 1)
    callback.attempts.append(attempt)
    callback.delivered = attempt.status_code is not None and 200 <= attempt.status_code < 300
    rt.records.save_callback(task_id, callback)
    log.info(
        "callback task_id=%s attempt=%d status=%s error=%s",
        task_id,
        len(callback.attempts),
        attempt.status_code,
        attempt.error,
    )
    refused = (attempt.error or "").startswith("refused") or settings.callback_secret is None
    if not callback.delivered and not refused and len(callback.attempts) < settings.callback_max_attempts:
        delay = min(60.0, 2.0 ** len(callback.attempts)) * (0.5 + random.random())
        raise self.retry(countdown=delay)
    return callback.delivered


def predict_matches(self: PredictTask, payload: dict[str, Any]) -> int:
    """Predict a chunk of a batch submission in one vectorised pass; each match's result under its own task id."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not all(
        isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and isinstance(i[1], int) for i in items
    ):
        raise InvalidInput("payload must be {'items': [[task_id, match_id], ...]}")
    started = time.perf_counter()
    rt = runtime()
    batch = self.request.get("batch")
    batch = batch if isinstance(batch, str) else None
    if batch:
        rt.records.start_batch(batch)
    cancelled = rt.records.starting([task_id for task_id, _ in items])
    wanted = {task_id: match_id for task_id, match_id in items if task_id not in cancelled}
    expired = late(deadlines_of(self), wanted)  # checked per task: a chunk mixes submissions
    for task_id in expired:
        del wanted[task_id]
    source = "batch" if batch else "async"
    outcomes = rt.service().predict_many(list(set(wanted.values())), source=source) if wanted else {}
    ok: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for task_id, match_id in wanted.items():
        outcome = outcomes[match_id]
        if isinstance(outcome, Exception):
            rt.app.backend.mark_as_failure(task_id, outcome)
            failed.append(task_id)
            TASKS.labels(outcome="not_found").inc()
        else:
            ok[task_id] = outcome
    # orjson writes the same JSON as the backend's encoder, several times faster on results that carry markets
    rt.records.store_results(ok, orjson.dumps, expired=expired, failed=failed, batch=batch)
    if batch:
        release_share(self.request.id)
    if expired:
        TASKS_EXPIRED.labels(task=BULK_TASK).inc(len(expired))
        log.info("expired chunk=%s tasks=%s", self.request.id, ",".join(expired))
    log.info("predicted chunk=%s tasks=%s", self.request.id, ",".join(ok))
    TASKS.labels(outcome="succeeded").inc(len(ok))
    TASK_DURATION.observe(time.perf_counter() - started)
    return len(ok)


def register(app: Celery, settings: Settings) -> None:
    """Register matchcast's tasks on ``app``, their retry bounds from ``settings``."""
    bounds = {"max_retries": settings.task_max_retries, "retry_backoff_max": settings.task_retry_backoff_max_s}
    for name, fn in (
        (PREDICT_TASK, predict_match),
        (PREDICT_GROUP_TASK, predict_match_group),
        (BULK_TASK, predict_matches),
    ):
        app.task(name=name, base=PredictTask, bind=True, **bounds)(fn)
    app.task(name=CALLBACK_TASK, bind=True, max_retries=None, acks_late=True)(deliver_callback)
