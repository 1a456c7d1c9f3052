"""Maintenance tasks on ``ml.maintenance``: ingesting every feed (beat), an uploaded file (``POST /admin/ingest``),
and pruning the prediction log (beat).

They never share a queue with predictions. ``ingest_feeds`` runs on one host at a time (a Redis lock in the
result backend); each feed is read and ingested on its own, so one failing feed does not hold the others back.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, Task

from matchcast.config import Settings
from matchcast.data.feed_state import feed_states
from matchcast.data.prediction_log import prune_log
from matchcast.errors import IngestError, InvalidInput
from matchcast.metrics import FEED_FAILURES, FEED_LAST_SUCCESS, FEED_UNKNOWN_TEAMS, LOG_PRUNED
from matchcast.service.feeds import ingest_content, ingest_feed, load_feeds
from matchcast.service.wiring import store_for
from matchcast.tasks.keys import LOCK_KEY
from matchcast.tasks.names import INGEST_FEEDS_TASK, INGEST_UPLOAD_TASK, PRUNE_LOG_TASK
from matchcast.worker.app import runtime

log = logging.getLogger("matchcast.worker.maintenance")
UPLOAD_FEED = "upload"  # the ``feed`` label of uploads' metrics


def _held_back(report: dict[str, Any]) -> int:
    return sum(1 for u in report.get("unknown_teams", []) if u.get("decision") == "held_back")


def ingest_feeds(task: Task, _payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read every configured feed and ingest what changed: ``{"feeds": [report, ...]}`` (or ``skipped``)."""
    rt = runtime()
    settings = rt.settings
    lock = rt.app.backend.client.lock(
        LOCK_KEY + INGEST_FEEDS_TASK, timeout=settings.maintenance_time_limit_s, blocking=False
    )
    if not lock.acquire():
        log.info("ingest_feeds skipped: another run holds the lock")
        return {"kind": "feeds", "skipped": "another run is reading the feeds", "feeds": []}
    try:
        reports = []
        for feed in load_feeds(settings):
            out = ingest_feed(settings, feed)
            if out["outcome"] == "failed":
                FEED_FAILURES.labels(feed=feed.name, reason=out["reason"]).inc()
            else:
                FEED_LAST_SUCCESS.labels(feed=feed.name).set_to_current_time()
            if "report" in out:
                FEED_UNKNOWN_TEAMS.labels(feed=feed.name).set(_held_back(out["report"]))
            reports.append(out)
        return {"kind": "feeds", "feeds": reports}
    finally:
        lock.release()


def ingest_upload(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Ingest an uploaded file carried in the message: ``{"name", "content", "league"}`` -> its ingest report."""
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), str):
        raise InvalidInput("payload must be {'name': str, 'content': str, 'league': str | None}")
    name = str(payload.get("name") or "upload.csv")
    league = payload.get("league") if isinstance(payload.get("league"), str) else None
    try:
        report = ingest_content(runtime().settings, name, payload["content"], league=league)
    except IngestError:
        FEED_FAILURES.labels(feed=UPLOAD_FEED, reason="malformed").inc()
        raise
    FEED_LAST_SUCCESS.labels(feed=UPLOAD_FEED).set_to_current_time()
    FEED_UNKNOWN_TEAMS.labels(feed=UPLOAD_FEED).set(_held_back(report))
    log.info("upload_ingested name=%s inserted=%d updated=%d", name, report["inserted"], report["updated"])
    return {"kind": "ingest", "name": name, **report}


def prune_prediction_log(task: Task, _payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Delete the prediction log's rows older than ``MATCHCAST_PREDICTION_LOG_KEEP_DAYS`` that can no longer
    count (``data.prediction_log.prune_log``): ``{"kind": "prune", "deleted": N, "served_before": ISO time}``."""
    settings = runtime().settings
    cutoff = datetime.now(UTC) - timedelta(days=settings.prediction_log_keep_days)
    deleted = prune_log(store_for(settings), cutoff)
    LOG_PRUNED.inc(deleted)
    log.info("prediction_log_pruned deleted=%d served_before=%s", deleted, cutoff.isoformat())
    return {"kind": "prune", "deleted": deleted, "served_before": cutoff.isoformat()}


def seed_feed_metrics(settings: Settings) -> None:
    """Set each feed's last-success gauge from the store (a new worker process starts with empty metrics)."""
    for name, st in feed_states(store_for(settings)).items():
        if st.last_success_at is not None:
            FEED_LAST_SUCCESS.labels(feed=name).set(st.last_success_at.timestamp())


def register(app: Celery, settings: Settings) -> None:
    """Register the maintenance tasks on ``app``: no retries (the next tick reads again), their own time limit."""
    limits = {"time_limit": settings.maintenance_time_limit_s, "soft_time_limit": settings.maintenance_time_limit_s - 5}
    app.task(name=INGEST_FEEDS_TASK, bind=True, acks_late=True, max_retries=0, **limits)(ingest_feeds)
    app.task(name=INGEST_UPLOAD_TASK, bind=True, acks_late=True, max_retries=0, **limits)(ingest_upload)
    app.task(name=PRUNE_LOG_TASK, bind=True, acks_late=True, max_retries=0, **limits)(prune_prediction_log)
