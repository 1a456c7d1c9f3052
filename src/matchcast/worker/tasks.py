"""Tasks: decode, call the service, return JSON."""

from __future__ import annotations

import time
from typing import Any

from matchcast.config import PREDICT_TASK
from matchcast.errors import InvalidInput, NotFound
from matchcast.metrics import TASK_DURATION, TASKS
from matchcast.worker.app import app, get_service


@app.task(name=PREDICT_TASK, acks_late=True, reject_on_worker_lost=True)
def predict_match(payload: dict[str, Any]) -> dict[str, Any]:
    """Predict one match: ``{"match_id": N}`` or inline ``{"features": {...}, ...}``."""
    started = time.perf_counter()
    try:
        if not isinstance(payload, dict):
            raise InvalidInput("payload must be a JSON object")
        result = get_service().predict(payload)
    except (InvalidInput, NotFound):
        TASKS.labels(outcome="rejected").inc()
        raise
    except Exception:
        TASKS.labels(outcome="failed").inc()
        raise
    TASKS.labels(outcome="succeeded").inc()
    TASK_DURATION.observe(time.perf_counter() - started)
    return result
