"""Dead letters: tasks given up on, kept in the match store's database so they survive broker restarts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from matchcast.data.store import DeadLetter, MatchStore

MAX_ERROR = 2000


@dataclass(frozen=True)
class DeadLetterRow:
    """A dead letter as plain data."""

    id: int
    task_id: str
    task_name: str
    args: Any
    reason: str
    error: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None
    replay_task_id: str | None

    @classmethod
    def of(cls, d: DeadLetter) -> DeadLetterRow:
        """Copy a mapped row."""
        return cls(
            d.id,
            d.task_id,
            d.task_name,
            d.args,
            d.reason,
            d.error,
            d.attempts,
            _utc(d.created_at),
            _utc(d.replayed_at) if d.replayed_at else None,
            d.replay_task_id,
        )


def _utc(at: datetime) -> datetime:
    """SQLite gives stored times back without their zone; every stored time is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class DeadLetters:
    """Record, list and mark dead letters."""

    def __init__(self, store: MatchStore) -> None:
        self.store = store

    def record(self, *, task_id: str, task_name: str, args: Any, reason: str, error: str, attempts: int) -> None:
        """Record a dead letter; recording the same task again keeps the first record (at-least-once safe)."""
        values = {
            "task_id": task_id,
            "task_name": task_name[:128],
            "args": args,
            "reason": reason[:32],
            "error": error[:MAX_ERROR],
            "attempts": attempts,
            "created_at": datetime.now(UTC),
        }
        dialect = self.store.engine.dialect.name
        with self.store.session() as s:
            if dialect == "postgresql":
                s.execute(pg_insert(DeadLetter).values(**values).on_conflict_do_nothing(index_elements=["task_id"]))
            elif dialect == "sqlite":
                s.execute(sqlite_insert(DeadLetter).values(**values).on_conflict_do_nothing(index_elements=["task_id"]))
            elif s.scalar(select(DeadLetter.id).where(DeadLetter.task_id == task_id)) is None:
                s.add(DeadLetter(**values))

    def list(
        self, *, limit: int = 50, offset: int = 0, include_replayed: bool = False
    ) -> tuple[int, list[DeadLetterRow]]:
        """Newest first: (total, page)."""
        cond = [] if include_replayed else [DeadLetter.replayed_at.is_(None)]
        with self.store.session() as s:
            total = int(s.scalar(select(func.count()).select_from(DeadLetter).where(*cond)) or 0)
            rows = s.scalars(
                select(DeadLetter).where(*cond).order_by(DeadLetter.id.desc()).limit(limit).offset(offset)
            ).all()
            return total, [DeadLetterRow.of(r) for r in rows]

    def get(self, dead_letter_id: int) -> DeadLetterRow | None:
        """One dead letter."""
        with self.store.session() as s:
            d = s.get(DeadLetter, dead_letter_id)
            return DeadLetterRow.of(d) if d else None

    def by_task(self, task_id: str) -> DeadLetterRow | None:
        """The dead letter of a task, if it has one."""
        with self.store.session() as s:
            d = s.scalar(select(DeadLetter).where(DeadLetter.task_id == task_id))
            return DeadLetterRow.of(d) if d else None

    def mark_replayed(self, dead_letter_id: int, replay_task_id: str) -> None:
        """Note that a dead letter was submitted again, as which task."""
        with self.store.session() as s:
            s.execute(
                update(DeadLetter)
                .where(DeadLetter.id == dead_letter_id)
                .values(replayed_at=datetime.now(UTC), replay_task_id=replay_task_id)
            )

    def count(self) -> int:
        """Dead letters not replayed."""
        return self.list(limit=1)[0]

    def purge_older_than(self, days: int) -> int:
        """Forget dead letters older than ``days``."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        with self.store.session() as s:
            result = s.execute(delete(DeadLetter).where(DeadLetter.created_at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)
