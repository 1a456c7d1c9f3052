"""Every task and queue name of matchcast's protocol, and the sizes that bound a message.

The design note's ``predict_match`` on ``ml`` is the contract for any client: one JSON payload,
``{"match_id": N}`` or inline ``{"features": {...}, ...}``. matchcast's own API also sends three forms of its own,
each under a name of its own (``docs/architecture.md`` draws every message).
"""

from __future__ import annotations

ML_QUEUE = "ml"  # single async predictions, callbacks, chunks of async submissions
INTERACTIVE_QUEUE = "ml.interactive"  # sync requests, grouped
BULK_QUEUE = "ml.bulk"  # chunks of batch submissions (all keys in one line, when fair share is off)
BULK_SHARDS = 4  # fair share: the bulk lane's sub-queues, one API key on each while it has work (tasks/fairshare.py)
BULK_SHARD_QUEUES = tuple(f"{BULK_QUEUE}.{i}" for i in range(BULK_SHARDS))  # ml.bulk.0 .. ml.bulk.3
MAINTENANCE_QUEUE = "ml.maintenance"  # feeds, uploads, retraining: never in front of a prediction
DEAD_QUEUE = "ml.dead"  # what is given up on, collected into the store
DEAD_EXCHANGE = "ml.dlx"

PREDICT_TASK = "predict_match"  # [payload] -> prediction
PREDICT_GROUP_TASK = "predict_match_group"  # [{"requests": [payload, ...]}] -> [answer, ...] in order
BULK_TASK = "predict_matches"  # [{"items": [[task_id, match_id], ...]}] -> count; results under each task_id
CALLBACK_TASK = "deliver_callback"  # [task_id] -> delivered?
INGEST_FEEDS_TASK = "ingest_feeds"  # [{}] -> {"feeds": [feed report, ...]} (beat, every MATCHCAST_FEEDS_INTERVAL_S)
INGEST_UPLOAD_TASK = "ingest_upload"  # [{"name", "content", "league"}] -> an ingest report (POST /admin/ingest)
RETRAIN_TASK = "retrain_model"  # [] -> the gate's decision record (MAINTENANCE_QUEUE only)
PRUNE_LOG_TASK = "prune_prediction_log"  # [] -> {"deleted": N, ...} (beat, daily: the log's retention)

BULK_CHUNK = 100  # tasks one ``predict_matches`` message carries
GROUP_MAX = 1000  # requests one ``predict_match_group`` message may carry

LANES: dict[str, tuple[str, ...]] = {
    "interactive": (INTERACTIVE_QUEUE,),
    "bulk": (ML_QUEUE, BULK_QUEUE, *BULK_SHARD_QUEUES),
    "maintenance": (MAINTENANCE_QUEUE,),
    "all": (INTERACTIVE_QUEUE, ML_QUEUE, BULK_QUEUE, *BULK_SHARD_QUEUES, MAINTENANCE_QUEUE),
}
