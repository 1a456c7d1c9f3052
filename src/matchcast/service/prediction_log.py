"""The prediction log's writer, in each worker process: rows buffered in memory, written by a thread of its own.

``ServedLog.served`` is called by ``PredictionService`` in the pass that predicted, with the predictions it is
about to return and their feature rows: it turns them into log rows (and, while a challenger exists, the
challenger's shadow rows for the same feature rows, one vectorised call) and appends them to a buffer. A thread
writes the buffer every ``MATCHCAST_PREDICTION_LOG_FLUSH_S`` or once ``..._FLUSH_ROWS`` wait, one insert executed
over the batch. Nothing here may block or fail a prediction: a store that is down or slow costs the rows of that
flush (``prediction_log_dropped_total{reason="store_error"}``), a buffer that is full the rows beyond it
(``reason="buffer_full"``); predictions go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np

from matchcast.data.prediction_log import write_log_rows
from matchcast.data.store import MatchStore
from matchcast.metrics import PREDICTION_LOG_DROPPED, PREDICTION_LOG_ROWS
from matchcast.service.shadow import Shadow

log = logging.getLogger(__name__)
SOURCES = ("sync", "async", "batch")
# What a log row takes of a prediction (``Prediction.model_dump(include=LOGGED_FIELDS)``).
LOGGED_FIELDS = set(
    {
        "match_id",
        "model_version",
        "feature_version",
        "feature_revision",
        "features_as_of",
        "probabilities",
        "predicted_at",
    }
)


class PredictionLogWriter:
    """A bounded buffer of log rows and the thread that writes it; ``tick`` runs on that thread each round."""

    def __init__(
        self,
        store: MatchStore,
        *,
        flush_s: float,
        flush_rows: int,
        max_rows: int,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.flush_s, self.flush_rows, self.max_rows, self.tick = (
            store,
            flush_s,
            flush_rows,
            max_rows,
            tick,
        )
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_at = float("-inf")

    def start(self) -> None:
        """Start the writing thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="matchcast-prediction-log", daemon=True)
            self._thread.start()

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows for the next write; never blocks on the store."""
        with self._lock:
            room = max(0, self.max_rows - len(self._rows))
            if len(rows) > room:
                PREDICTION_LOG_DROPPED.labels(reason="buffer_full").inc(len(rows) - room)
                rows = rows[:room]
            self._rows.extend(rows)
            waiting = len(self._rows)
        if waiting >= self.flush_rows:
            self._wake.set()

    def pending(self) -> int:
        """Rows waiting to be written."""
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write what waits now; the rows written (0 when the store refused them: they are dropped, counted)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            write_log_rows(self.store, rows)
        except Exception as exc:
            PREDICTION_LOG_DROPPED.labels(reason="store_error").inc(len(rows))
            now = time.monotonic()
            if now - self._warned_at > 30:  # one line per 30 s while the store is away, not one per flush
                self._warned_at = now
                log.warning("prediction log: %d rows dropped, the store refused them: %s", len(rows), exc)
            return 0
        shadow = sum(1 for r in rows if r["shadow"])
        PREDICTION_LOG_ROWS.labels(kind="served").inc(len(rows) - shadow)
        if shadow:
            PREDICTION_LOG_ROWS.labels(kind="shadow").inc(shadow)
        return len(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if self.tick is not None:
                try:
                    self.tick()
                except Exception as exc:  # the tick (the shadow's lookup) must not end the writer
                    log.warning("prediction log tick failed: %s", exc)
            self.flush()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()


def _served_at(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _as_of(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def log_row(prediction: dict[str, Any], source: str) -> dict[str, Any]:
    """The log row of a served prediction (its JSON, or ``Prediction.model_dump()``)."""
    p = prediction["probabilities"]
    return {
        "match_id": prediction["match_id"],
        "model_version": prediction["model_version"],
        "shadow": False,
        "source": source,
        "feature_version": prediction.get("feature_version"),
        "feature_revision": prediction.get("feature_revision"),  # set once features carry revisions
        "features_as_of": _as_of(prediction.get("features_as_of")),
        "p_home": p["home"],
        "p_draw": p["draw"],
        "p_away": p["away"],
        "served_at": _served_at(prediction["predicted_at"]),
    }


class ServedLog:
    """What a worker process records of the predictions it serves (and, with a shadow, the challenger's)."""

    def __init__(self, writer: PredictionLogWriter, shadow: Shadow | None = None) -> None:
        self.writer, self.shadow = writer, shadow

    def served(self, predictions: Sequence[dict[str, Any]], x: np.ndarray, source: str) -> None:
        """Record ``predictions`` of stored matches, predicted from the feature rows ``x`` (in the same order)."""
        if not predictions:
            return
        try:
            rows = [log_row(p, source) for p in predictions]
        except Exception as exc:  # recording must never fail a prediction
            PREDICTION_LOG_DROPPED.labels(reason="unrecordable").inc(len(predictions))
            log.warning("prediction log: could not record %d predictions: %s", len(predictions), exc)
            return
        try:
            rows += self._shadow_rows(rows, x)
        except Exception as exc:  # nor may the challenger fail the champion's rows
            PREDICTION_LOG_DROPPED.labels(reason="shadow_failed").inc(len(predictions))
            log.warning("prediction log: the shadow could not predict %d rows: %s", len(predictions), exc)
        self.writer.add(rows)

    def _shadow_rows(self, rows: list[dict[str, Any]], x: np.ndarray) -> list[dict[str, Any]]:
        forecast = self.shadow.forecast(x, rows[0]["model_version"]) if self.shadow is not None else None
        if forecast is None:
            return []
        version, probs = forecast
        totals = probs.sum(axis=1)
        return [
            row
            | {
                "model_version": version,
                "shadow": True,
                "p_home": float(p[0] / t),
                "p_draw": float(p[1] / t),
                "p_away": float(p[2] / t),
            }
            for row, p, t in zip(rows, probs, totals, strict=True)
        ]

    def close(self) -> None:
        """Write what is left (at the process's end)."""
        self.writer.close()
