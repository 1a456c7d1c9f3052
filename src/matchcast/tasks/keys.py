"""The Redis keys of the task protocol, in the result backend's database. Each lives ``MATCHCAST_TASK_TTL_S``
unless said otherwise (``docs/architecture.md`` says who writes and reads each)."""

from __future__ import annotations

import hashlib

RESULT_KEY = "celery-task-meta-"  # Celery's result record (and pub/sub channel) of a task
TASK_KEY = "matchcast:task:"  # an issued task id: {"source", "issued_at"}
IDEMPOTENCY_KEY = "matchcast:idem:"  # an idempotency key -> the task id it claimed
CANCEL_KEY = "matchcast:cancel:"  # a cancelled task: workers do not start it
CALLBACK_KEY = "matchcast:callback:"  # a task's completion callback: URL and delivery attempts
WORKER_KEY = "matchcast:worker:"  # a worker's heartbeat (expires after three missed beats)
BACKEND_KEY = "matchcast:backend"  # no TTL: {"epoch", "since"}; gone means the backend came back empty
BATCH_KEY = "matchcast:batch:"  # a batch: hash {"meta": json, "started_at", "cancelled_at"}; "...:events" a stream
GONE_KEY = "matchcast:gone:"  # ids issued in an hour, kept past their expiry (410 instead of 404): small int sets
LOCK_KEY = "matchcast:lock:"  # a maintenance task running somewhere (redis-py lock, expires with its time limit)
FAIR_BACKLOG_KEY = "matchcast:fair:backlog"  # hash: API key id -> its batch tasks not yet done (bulk lane)
FAIR_SHARD_KEY = "matchcast:fair:shard"  # hash: API key id -> the bulk sub-queue its chunks go to while it has work
FAIR_LOAD_KEY = "matchcast:fair:load"  # hash: shard -> tasks not yet done in it
FAIR_CHUNK_KEY = "matchcast:fair:chunk:"  # a sent chunk's share "<key> <shard> <tasks>", released once when done
EVENTS_CHANNEL = "matchcast:events"  # pub/sub: {"tasks": [ids], "batch": id} when workers change tasks' states

GONE_SLOT_S = 3600  # one tombstone set per hour of issue and bucket
GONE_BUCKETS = 1024  # per hour: each set stays a compact intset (8 bytes an id) up to 512 ids, i.e. ~500k ids/hour


def result_key(task_id: str) -> str:
    """Celery's result record of ``task_id``."""
    return RESULT_KEY + task_id


def task_key(task_id: str) -> str:
    """The record that ``task_id`` was issued (status polls of ids never issued are 404)."""
    return TASK_KEY + task_id


def cancel_key(task_id: str) -> str:
    """The marker asking workers not to start ``task_id``."""
    return CANCEL_KEY + task_id


def callback_key(task_id: str) -> str:
    """A task's completion callback: its URL and delivery attempts."""
    return CALLBACK_KEY + task_id


def idempotency_key(kind: str, key: str, *qualifiers: str) -> str:
    """Where an ``Idempotency-Key`` of ``kind`` (``sync``/``async``) is claimed, qualified e.g. by a body digest."""
    return ":".join((f"{IDEMPOTENCY_KEY}{kind}", key, *qualifiers))


def batch_key(batch_id: str) -> str:
    """A batch's record: its tasks and matches, deadline, when it started and was cancelled."""
    return BATCH_KEY + batch_id


def batch_events_key(batch_id: str) -> str:
    """A batch's event stream (Redis Stream): one entry per change of its tasks' states, for SSE replay."""
    return BATCH_KEY + batch_id + ":events"


def gone_slot(kind: str, ident: str, issued_at: float) -> tuple[str, int]:
    """The tombstone of an id of ``kind`` (``task``/``batch``) issued at ``issued_at``: its set and its member.

    The member is 63 bits of a hash of the id (an integer, so the set is an intset: 8 bytes an id); the bucket is
    another 10 bits. A false match needs a 73-bit collision with an id of the same hour.
    """
    digest = hashlib.blake2b(ident.encode(), digest_size=10).digest()
    bucket = int.from_bytes(digest[:2], "big") % GONE_BUCKETS
    member = int.from_bytes(digest[2:], "big") >> 1
    return f"{GONE_KEY}{kind}:{int(issued_at // GONE_SLOT_S)}:{bucket}", member
