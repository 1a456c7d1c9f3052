"""The Redis keys of the task protocol, in the result backend's database. Each lives ``MATCHCAST_TASK_TTL_S``
unless said otherwise (``docs/architecture.md`` says who writes and reads each)."""

from __future__ import annotations

RESULT_KEY = "celery-task-meta-"  # Celery's result record (and pub/sub channel) of a task
TASK_KEY = "matchcast:task:"  # an issued task id: {"source", "issued_at"}
IDEMPOTENCY_KEY = "matchcast:idem:"  # an idempotency key -> the task id it claimed
CANCEL_KEY = "matchcast:cancel:"  # a cancelled task: workers do not start it
CALLBACK_KEY = "matchcast:callback:"  # a task's completion callback: URL and delivery attempts
WORKER_KEY = "matchcast:worker:"  # a worker's heartbeat (expires after three missed beats)
BACKEND_KEY = "matchcast:backend"  # no TTL: {"epoch", "since"}; gone means the backend came back empty


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
