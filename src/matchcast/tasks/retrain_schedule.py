"""The retraining entry of beat's schedule (``beat_schedule(settings)`` includes it)."""

from __future__ import annotations

from typing import Any

from matchcast.config import Settings
from matchcast.tasks.names import MAINTENANCE_QUEUE, RETRAIN_TASK

RETRAIN_ENTRY = "retrain-model"


def retrain_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """``retrain_model`` every ``MATCHCAST_RETRAIN_EVERY_S`` (weekly) on ``ml.maintenance``; none when 0.

    A message no worker took within one interval expires: the next one does the same work on newer data."""
    every = settings.retrain_every_s
    if not every:
        return {}
    return {
        RETRAIN_ENTRY: {
            "task": RETRAIN_TASK,
            "schedule": float(every),
            "options": {"queue": MAINTENANCE_QUEUE, "expires": every},
        }
    }
