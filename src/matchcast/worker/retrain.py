"""The maintenance lane's retraining task: ``retrain_model`` runs ``service.retrain`` and returns its record.

It runs on ``ml.maintenance`` only (``tasks/celery_app.py`` routes it; beat's entry names the queue too), so a
retrain never waits in front of a prediction. The message is acknowledged when the task starts, not when it
ends: a retrain runs for minutes, longer than the Redis broker's visibility timeout, and one lost with its
worker is simply the next scheduled one. Its own time limit is ``MATCHCAST_RETRAIN_TIME_LIMIT_S``.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from celery import Celery, Task

from matchcast.config import Settings
from matchcast.errors import Conflict, InvalidInput
from matchcast.metrics import RETRAIN_DURATION, RETRAINS
from matchcast.service.retrain import retrain
from matchcast.tasks.names import MAINTENANCE_QUEUE, RETRAIN_TASK
from matchcast.worker.app import runtime

log = logging.getLogger("matchcast.worker.retrain")


def _options(payload: Any) -> tuple[date | None, int | None]:
    """``{"since": "YYYY-MM-DD", "weeks": N}``, both optional (the settings' values otherwise)."""
    if payload is None:
        return None, None
    if not isinstance(payload, dict) or set(payload) - {"since", "weeks"}:
        raise InvalidInput('the payload is {"since": "YYYY-MM-DD", "weeks": N}, both optional')
    try:
        since = date.fromisoformat(payload["since"]) if payload.get("since") else None
    except (TypeError, ValueError):
        raise InvalidInput(f"since must be a date (YYYY-MM-DD), not {payload['since']!r}") from None
    weeks = payload.get("weeks")
    if weeks is not None and (not isinstance(weeks, int) or isinstance(weeks, bool) or not 1 <= weeks <= 52):
        raise InvalidInput("weeks must be an integer from 1 to 52")
    return since, weeks


def retrain_model(self: Task, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retrain on every result, gate, promote or not; the result is the decision record, or
    ``{"decision": "skipped", "reason": ...}`` while another retrain runs."""
    since, weeks = _options(payload)
    log.info("retrain_started task_id=%s", self.request.id)
    try:
        outcome = retrain(runtime().settings, since=since, weeks=weeks)
    except Conflict as exc:  # another retrain holds the lease: this one is skipped, said so, and not retried
        log.info("retrain_skipped task_id=%s reason=%s", self.request.id, exc.detail)
        RETRAINS.labels(decision="skipped").inc()
        return {"decision": "skipped", "reason": exc.detail}
    RETRAINS.labels(decision=outcome.record["decision"]).inc()
    RETRAIN_DURATION.set(outcome.record["seconds"]["total"])
    return outcome.record


def register(app: Celery, settings: Settings) -> None:
    """Register ``retrain_model`` on ``app``: early ack, no retry, its own time limits."""
    app.task(
        name=RETRAIN_TASK,
        bind=True,
        queue=MAINTENANCE_QUEUE,
        acks_late=False,
        max_retries=0,
        time_limit=settings.retrain_time_limit_s,
        soft_time_limit=max(1, settings.retrain_time_limit_s - 30),
    )(retrain_model)
