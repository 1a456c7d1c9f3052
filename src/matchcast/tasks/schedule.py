"""The beat schedule: what ``matchcast beat`` sends, how often (each entry runs on ``ml.maintenance``)."""

from __future__ import annotations

from typing import Any

from matchcast.config import Settings
from matchcast.tasks.names import INGEST_FEEDS_TASK, MAINTENANCE_QUEUE, PRUNE_LOG_TASK
from matchcast.tasks.retrain_schedule import retrain_schedule


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for these settings; an interval of 0 leaves its entry out."""
    schedule: dict[str, dict[str, Any]] = {}
    if settings.feeds_interval_s > 0:
        schedule["ingest-feeds"] = {
            "task": INGEST_FEEDS_TASK,
            "schedule": settings.feeds_interval_s,
            "args": [{}],
            # A tick nobody ran before the next one is not worth running: the next one reads the same feeds.
            "options": {"queue": MAINTENANCE_QUEUE, "expires": max(1.0, settings.feeds_interval_s)},
        }
    if settings.prediction_log_prune_every_s > 0:
        every = settings.prediction_log_prune_every_s
        schedule["prune-prediction-log"] = {
            "task": PRUNE_LOG_TASK,
            "schedule": every,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": every},
        }
    schedule.update(retrain_schedule(settings))
    return schedule
