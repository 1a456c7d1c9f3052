"""Reading Celery's result records: a task's status, its outcome for a waiting caller, a grouped answer's error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from matchcast.config import redact_text
from matchcast.errors import Conflict, MatchcastError, PredictionFailed, from_wire
from matchcast.schemas import IngestResult, TaskStatus

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "EXPIRED"})
# An idempotency key pointing at such a task may be claimed again.
TAKEN_OVER = frozenset({"FAILURE", "REVOKED", "EXPIRED"})
EXPIRED = "EXPIRED"  # matchcast's own state: the deadline passed before a worker started the task
DEAD_LETTERED: Final = "DEAD_LETTERED"  # a FAILURE record naming ``DeadLettered``: kept in ``dead_letters``


def expired_meta(task_id: str, deadline: float, now: float) -> dict[str, Any]:
    """The result record of a task whose ``deadline`` (a Unix time) had passed when a worker came to it at ``now``."""
    at, by = _iso(now), _iso(deadline)
    return {
        "status": EXPIRED,
        "result": {"deadline": by, "expired_at": at, "reason": f"not started by its deadline {by} (checked {at})"},
        "traceback": None,
        "children": [],
        "date_done": at,
        "task_id": task_id,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def error_text(meta: dict[str, Any]) -> str:
    """A one-line reason from a Celery failure record (URL passwords and API keys masked)."""
    res = meta.get("result")
    if isinstance(res, dict) and "exc_type" in res:
        msg = res.get("exc_message")
        if isinstance(msg, list | tuple):
            msg = " ".join(str(m) for m in msg)
        return redact_text(f"{res['exc_type']}: {msg}")
    return redact_text(str(res))


def exc_type_of(meta: dict[str, Any]) -> str | None:
    """The exception type a Celery failure record names."""
    res = meta.get("result")
    return str(res.get("exc_type")) if isinstance(res, dict) and "exc_type" in res else None


def task_status(task_id: str, meta: dict[str, Any] | None) -> TaskStatus:
    """A task's status from its Celery result record (None: not started yet)."""
    if meta is None:
        return TaskStatus(task_id=task_id, status="PENDING")
    state = meta.get("status", "PENDING")
    if state == "SUCCESS":  # a grouped sync message's result is a list, read by the API that sent it
        result: Any = meta.get("result")
        if isinstance(result, dict) and result.get("kind") == "ingest":  # an upload's report, not a prediction
            return TaskStatus(task_id=task_id, status="SUCCESS", ingest=IngestResult.model_validate(result))
        if not isinstance(result, dict) or "kind" in result:  # another maintenance task's result: not shown here
            result = None
        return TaskStatus(task_id=task_id, status="SUCCESS", result=result)
    if state == EXPIRED:
        found = meta.get("result")
        why: dict[str, Any] = found if isinstance(found, dict) else {}
        return TaskStatus(
            task_id=task_id,
            status="EXPIRED",
            error=str(why.get("reason") or "not started by its deadline"),
            deadline=why.get("deadline"),
            expired_at=why.get("expired_at"),
        )
    if state == "FAILURE" and exc_type_of(meta) == "DeadLettered":
        return TaskStatus(task_id=task_id, status=DEAD_LETTERED, error=error_text(meta))
    if state in ("FAILURE", "REVOKED", "RETRY"):
        return TaskStatus(task_id=task_id, status=state, error=error_text(meta))
    return TaskStatus(task_id=task_id, status="STARTED" if state == "STARTED" else "PENDING")


def outcome(meta: dict[str, Any]) -> Any:
    """A finished task's result, or the domain error it ended with (as the API would have raised it)."""
    if meta.get("status") == "SUCCESS":
        return meta["result"]
    if meta.get("status") in ("REVOKED", EXPIRED):
        raise Conflict("the task was cancelled or expired before it ran")
    text = error_text(meta)
    raise from_wire(exc_type_of(meta), text.split(": ", 1)[-1]) or PredictionFailed(text)


def answer_error(answer: Any) -> MatchcastError:
    """The error of one answer in a grouped result (``{"error": type, "detail": text}``)."""
    if not isinstance(answer, dict):
        return PredictionFailed("the worker sent an answer of the wrong shape")
    detail = str(answer.get("detail", "prediction failed"))
    return from_wire(str(answer.get("error", "")), detail) or PredictionFailed(f"{answer.get('error')}: {detail}")
