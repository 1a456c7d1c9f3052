"""Every Prometheus metric matchcast exports, in one place.

The API process exports its own registry. Worker processes (prefork children included) write to
``PROMETHEUS_MULTIPROC_DIR``, which the worker's main process serves; ``matchcast worker`` sets it up
before this module is imported.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The design note's counters: names and labels are part of the contract.
PREDICTION_REQUESTS = Counter("prediction_requests", "Prediction requests accepted by the API", ["source"])
PREDICTION_TIMEOUTS = Counter("prediction_timeouts", "Synchronous predictions that timed out (504)")

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"], buckets=LATENCY_BUCKETS
)
PREDICTION_LATENCY = Histogram(
    "prediction_latency_seconds", "End-to-end prediction latency seen by the API", ["source"], buckets=LATENCY_BUCKETS
)

MODEL_LOADS = Counter("model_loads", "Model loads, by process", ["version"])
TASKS = Counter("prediction_tasks", "predict_match task outcomes in workers", ["outcome"])
TASK_DURATION = Histogram(
    "prediction_task_duration_seconds", "Execution time of predict_match in a worker", buckets=LATENCY_BUCKETS
)
QUEUE_DEPTH = Gauge("queue_depth", "Messages waiting in the ml queue (sampled by the API)", multiprocess_mode="liveall")
READINESS = Gauge(
    "readiness_ok",
    "1 when a readiness check passed at the last GET /ready, else 0",
    ["check"],
    multiprocess_mode="liveall",
)
BROKER_NODE_UP = Gauge(
    "broker_node_up",
    "1 when a broker node (of MATCHCAST_BROKER_URL's failover list) answered at the last GET /ready, else 0",
    ["node"],
    multiprocess_mode="liveall",
)
DEAD_LETTERS_RECORDED = Counter("dead_letters_recorded", "Dead letters stored by workers", ["reason"])
DEAD_LETTERS = Gauge("dead_letters", "Dead letters not replayed (sampled by the API)", multiprocess_mode="liveall")
TASK_QUEUE_WAIT = Histogram(
    "prediction_task_queue_seconds", "Time from submission to start of execution in a worker", buckets=LATENCY_BUCKETS
)
RESULT_BACKEND_RESETS = Counter(
    "result_backend_resets", "Times the API found the result backend come back empty (its marker key gone)"
)
RESULT_BACKEND_PERSISTENT = Gauge(
    "result_backend_persistent",
    "1 when the result backend keeps an append-only file (accepted tasks survive its restart), else 0",
    multiprocess_mode="liveall",
)
RESULT_BACKEND_REPLICAS = Gauge(
    "result_backend_replicas",
    "Replicas connected to the result backend's master (sampled by the API)",
    multiprocess_mode="liveall",
)
RESULT_BACKEND_UNREPLICATED = Counter(
    "result_backend_unreplicated_writes",
    "Task record or result writes that fewer replicas than MATCHCAST_RESULT_BACKEND_WAIT_REPLICAS confirmed in time",
)
TASKS_EXPIRED = Counter(
    "prediction_tasks_expired", "Tasks not computed because their deadline passed before they started", ["task"]
)
SSE_STREAMS = Gauge(
    "sse_open_streams", "Server-sent event streams open on the API", ["kind"], multiprocess_mode="livesum"
)
SSE_EVENTS = Counter("sse_events", "Server-sent events sent by the API (keep-alive comments not counted)", ["kind"])
SSE_REFUSED = Counter("sse_streams_refused", "Event streams refused with 429: the key had its open streams")
TASK_GONE = Counter("task_status_gone", "Status reads of expired ids answered 410 Gone", ["kind"])
ASYNC_BACKLOG = Gauge(
    "async_backlog",
    "Batch predictions of an API key (its id; '-': no key) not yet done on the bulk lane (sampled by the API)",
    ["key"],
    multiprocess_mode="liveall",
)
SYNC_GROUP_SIZE = Histogram(
    "prediction_sync_group_size",
    "Sync requests sent together in one predict_match message (API)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)

# Feeds (the maintenance workers that read them export these; a worker seeds the gauge from the store at start).
FEED_LAST_SUCCESS = Gauge(
    "feed_last_success_timestamp_seconds",
    "Unix time a feed was last read leaving the store current (ingested, unchanged or not modified)",
    ["feed"],
    multiprocess_mode="max",
)
FEED_FAILURES = Counter(
    "feed_failures",
    "Feed reads that changed nothing, by reason (unreachable, http_status, malformed, ...)",
    ["feed", "reason"],
)
FEED_UNKNOWN_TEAMS = Gauge(
    "feed_unknown_teams",
    "Team names a league had never seen whose rows the last ingest of a feed (or upload) held back",
    ["feed"],
    multiprocess_mode="mostrecent",
)


# Prediction log (workers) and live scores (API; README "Live scores").
PREDICTION_LOG_ROWS = Counter("prediction_log_rows", "Prediction log rows written to the store", ["kind"])
PREDICTION_LOG_DROPPED = Counter(
    "prediction_log_dropped", "Prediction log rows dropped (store unreachable, buffer full)", ["reason"]
)


def _live_gauge(name: str, documentation: str, labels: tuple[str, ...] = ("model_version", "window")) -> Gauge:
    """A gauge the API sets when it computes the live scores (the latest value wins across its processes)."""
    return Gauge(name, documentation, list(labels), multiprocess_mode="mostrecent")


LIVE_RPS = _live_gauge("model_live_rps", "Live RPS of a served model version's counted predictions")
LIVE_SHADOW_RPS = _live_gauge("model_live_shadow_rps", "Live RPS of the challenger's shadow predictions")
LIVE_BASELINE_RPS = _live_gauge("model_live_baseline_rps", "League-frequency baseline RPS on the same scored matches")
LIVE_SCORED = _live_gauge("model_live_scored_matches", "Matches scored for a served model version")
HELDOUT_RPS = _live_gauge("model_heldout_rps", "Held-out RPS of a model version (its MLflow run)", ("model_version",))

LOG_PRUNED = Counter(
    "prediction_log_pruned_rows", "Prediction log rows deleted by prune_prediction_log (older, and never to count)"
)
RETRAINS = Counter("model_retrains", "Retrains run by the retrain_model task, by the gate's decision", ["decision"])
RETRAIN_DURATION = Gauge(
    "model_retrain_duration_seconds", "Duration of the last retrain_model run", multiprocess_mode="mostrecent"
)


def exposition() -> bytes:
    """The Prometheus text of this process, or of all the processes sharing ``PROMETHEUS_MULTIPROC_DIR``.

    ``matchcast api --workers N`` (N > 1) and ``matchcast worker`` set that folder before starting their processes.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
