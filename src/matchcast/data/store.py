"""The match store: SQLAlchemy tables for matches and their precomputed features."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

log = logging.getLogger(__name__)
STAT_COLUMNS = (
    "HTHG",
    "HTAG",
    "HS",
    "AS",
    "HST",
    "AST",
    "HF",
    "AF",
    "HC",
    "AC",
    "HY",
    "AY",
    "HR",
    "AR",
)


class Base(DeclarativeBase):
    """Declarative base of the match store."""


class Match(Base):
    """One match: a result when known, else an upcoming fixture."""

    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("league", "date", "home_team", "away_team", name="uq_match"),)

    match_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    league: Mapped[str] = mapped_column(String(64), index=True)
    season: Mapped[str] = mapped_column(String(9), index=True)
    date: Mapped[date] = mapped_column(Date, index=True)
    home_team: Mapped[str] = mapped_column(String(64))
    away_team: Mapped[str] = mapped_column(String(64))
    home_goals: Mapped[int | None] = mapped_column(Integer, nullable=True)
    away_goals: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[str | None] = mapped_column(String(1), nullable=True)
    referee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stats: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str | None] = mapped_column(String(255), nullable=True)


class MatchFeatures(Base):
    """Features of one match, computed from matches strictly before its date."""

    __tablename__ = "match_features"

    match_id: Mapped[int] = mapped_column(ForeignKey("matches.match_id", ondelete="CASCADE"), primary_key=True)
    feature_version: Mapped[str] = mapped_column(String(32))
    values: Mapped[list[float]] = mapped_column(JSON)


class DeadLetter(Base):
    """A task that will not be retried any more: its original arguments, why, and how often it was tried."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    task_name: Mapped[str] = mapped_column(String(128))
    args: Mapped[Any] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(String(2000))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    replay_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


@dataclass(frozen=True)
class MatchRow:
    """A match as plain data, detached from any session."""

    match_id: int
    league: str
    season: str
    date: date
    home_team: str
    away_team: str
    home_goals: int | None
    away_goals: int | None
    result: str | None

    @classmethod
    def of(cls, m: Match) -> MatchRow:
        """Copy a mapped row into plain data."""
        return cls(
            m.match_id, m.league, m.season, m.date, m.home_team, m.away_team, m.home_goals, m.away_goals, m.result
        )


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL per process; creates the tables if missing."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    try:
        Base.metadata.create_all(engine)
    except OperationalError as exc:  # the database may be down for now; queries will say so and be retried
        log.warning("could not create tables yet: %s", type(exc).__name__)
    return engine


class MatchStore:
    """Reads and writes matches and features; the only code that knows the tables."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = get_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._sessions.begin() as s:
            yield s

    def count(self, *, with_result: bool | None = None) -> int:
        """How many matches, optionally only finished (True) or upcoming (False)."""
        stmt = select(func.count()).select_from(Match)
        if with_result is True:
            stmt = stmt.where(Match.result.is_not(None))
        elif with_result is False:
            stmt = stmt.where(Match.result.is_(None))
        with self.session() as s:
            return int(s.scalar(stmt) or 0)

    def get(self, match_id: int) -> MatchRow | None:
        """One match, or None."""
        with self.session() as s:
            m = s.get(Match, match_id)
            return MatchRow.of(m) if m else None

    def get_with_features(self, match_id: int) -> tuple[MatchRow, str, list[float]] | None:
        """A match with its feature version and values, or None if either is missing."""
        with self.session() as s:
            row = s.execute(
                select(Match, MatchFeatures)
                .join(MatchFeatures, MatchFeatures.match_id == Match.match_id)
                .where(Match.match_id == match_id)
            ).first()
            if row is None:
                return None
            m, f = row
            return MatchRow.of(m), f.feature_version, list(f.values)

    def features_for(self, match_ids: Sequence[int]) -> dict[int, tuple[MatchRow, str, list[float]]]:
        """Matches with their features, in one query: {match_id: (match, feature_version, values)}."""
        if not match_ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(Match, MatchFeatures)
                .join(MatchFeatures, MatchFeatures.match_id == Match.match_id)
                .where(Match.match_id.in_(list(match_ids)))
            ).all()
            return {m.match_id: (MatchRow.of(m), f.feature_version, list(f.values)) for m, f in rows}

    def existing(self, match_ids: Sequence[int]) -> set[int]:
        """Which of these match ids are stored."""
        if not match_ids:
            return set()
        with self.session() as s:
            return set(s.scalars(select(Match.match_id).where(Match.match_id.in_(list(match_ids)))).all())

    def upcoming(
        self,
        *,
        league: str | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[MatchRow]]:
        """Matches without a result, soonest first: (total, page)."""
        cond: list[ColumnElement[bool]] = [Match.result.is_(None)]
        if league:
            cond.append(Match.league == league)
        if date_from:
            cond.append(Match.date >= date_from)
        if date_to:
            cond.append(Match.date <= date_to)
        with self.session() as s:
            total = int(s.scalar(select(func.count()).select_from(Match).where(*cond)) or 0)
            rows = s.scalars(
                select(Match)
                .where(*cond)
                .order_by(Match.date, Match.league, Match.match_id)
                .limit(limit)
                .offset(offset)
            ).all()
            return total, [MatchRow.of(m) for m in rows]

    def leagues(self) -> list[str]:
        """Leagues present in the store."""
        with self.session() as s:
            return sorted(s.scalars(select(Match.league).distinct()).all())

    def all_matches(self) -> list[Match]:
        """Every match, oldest first (detached rows)."""
        with self.session() as s:
            return list(s.scalars(select(Match).order_by(Match.date, Match.match_id)).all())

    def feature_table(self) -> list[tuple[int, str, list[float]]]:
        """Every stored feature row as (match_id, feature_version, values)."""
        with self.session() as s:
            rows = s.execute(select(MatchFeatures.match_id, MatchFeatures.feature_version, MatchFeatures.values)).all()
            return [(int(a), str(b), list(c)) for a, b, c in rows]


def dumps_stats(stats: dict[str, int] | None) -> str:
    """Canonical text of a stats dict, for change detection."""
    return json.dumps(stats, sort_keys=True) if stats else ""
