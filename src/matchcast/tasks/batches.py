"""A batch read back: its record (tasks, matches, times) and its tasks' result records, summed up as a status."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

from matchcast.schemas import FINAL_STATES, BatchFailure, BatchResult, BatchStatus, TaskStatus
from matchcast.tasks.status import task_status

BATCH_PAGE_MAX = 1000  # results (and failures) one batch status answers at most


def batch_meta(task_ids: dict[int, str], created_at: float, deadline: float | None, key: str | None) -> dict[str, Any]:
    """What a batch's record holds: its matches and their task ids in submission order, when, until when, whose."""
    return {
        "match_ids": list(task_ids),
        "task_ids": list(task_ids.values()),
        "created_at": created_at,
        "deadline": deadline,
        "key": key,
    }


def task_rows(record: dict[str, Any], metas: list[dict[str, Any] | None]) -> list[tuple[int, TaskStatus]]:
    """Each match of the batch with its task's status, in submission order."""
    ids = zip(record["match_ids"], record["task_ids"], metas, strict=True)
    return [(match_id, task_status(task_id, meta)) for match_id, task_id, meta in ids]


def _time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _done_at(meta: dict[str, Any] | None) -> datetime | None:
    raw = meta.get("date_done") if meta else None
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def summarize(
    batch_id: str, record: dict[str, Any], metas: list[dict[str, Any] | None], offset: int = 0, limit: int = 100
) -> BatchStatus:
    """The status of a batch: counts by state, its times, and a page of its results and of its failures."""
    rows = task_rows(record, metas)
    counts: Counter[str] = Counter(status.status for _, status in rows)
    done = sum(n for state, n in counts.items() if state in FINAL_STATES)
    results = [BatchResult(match_id=m, task_id=s.task_id, result=s.result) for m, s in rows if s.result is not None]
    failures = [
        BatchFailure(match_id=m, task_id=s.task_id, status=s.status, error=s.error)
        for m, s in rows
        if s.status in FINAL_STATES and s.status != "SUCCESS"
    ]
    finished = None
    if done == len(rows):
        ends = [t for t in map(_done_at, metas) if t is not None]
        finished = max(ends) if ends else None
    state: Literal["PENDING", "RUNNING", "DONE", "CANCELLED"]
    if record.get("cancelled_at") is not None:
        state = "CANCELLED"
    elif done == len(rows):
        state = "DONE"
    elif done or record.get("started_at") is not None:
        state = "RUNNING"
    else:
        state = "PENDING"
    return BatchStatus(
        batch_id=batch_id,
        status=state,
        count=len(rows),
        counts=dict(counts),
        done=done,
        done_fraction=round(done / len(rows), 4) if rows else 1.0,
        created_at=datetime.fromtimestamp(record["created_at"], UTC),
        started_at=_time(record.get("started_at")),
        finished_at=finished,
        deadline=_time(record.get("deadline")),
        cancelled_at=_time(record.get("cancelled_at")),
        offset=offset,
        limit=limit,
        results=results[offset : offset + limit],
        failures=failures[offset : offset + limit],
    )
