"""The match store: SQLAlchemy tables for matches and their precomputed features."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
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
    # When the store first got the current result (ingest's upsert sets it): which prediction counts (live scores).
    result_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MatchFeatures(Base):
    """Features of one match, computed from matches strictly before its date.

    ``revision`` is a digest of the feature version and the values (it changes exactly when they do); ``as_of``
    is the date of the latest result of the match's league that entered them; ``seq`` is the change sequence of
    the refresh that last wrote the row (``FeatureSequence``), so a reader can fetch only what changed."""

    __tablename__ = "match_features"

    match_id: Mapped[int] = mapped_column(ForeignKey("matches.match_id", ondelete="CASCADE"), primary_key=True)
    feature_version: Mapped[str] = mapped_column(String(32))
    values: Mapped[list[float]] = mapped_column(JSON)
    revision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    as_of: Mapped[date | None] = mapped_column(Date, nullable=True)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class FeatureSequence(Base):
    """One row: the change sequence of ``match_features``. A refresh that writes rows takes the next number in
    its own transaction, locking this row first, so refreshes commit in the order of their numbers."""

    __tablename__ = "feature_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)


class FeatureCheckpoint(Base):
    """The feature state of one league before ``before`` (a pickled ``FeatureState`` of that league alone).

    ``fingerprint`` digests every match of the league dated before ``before``: a refresh whose matches before
    that date digest the same resumes from the state; any other (history rewritten) recomputes the league."""

    __tablename__ = "feature_checkpoints"

    league: Mapped[str] = mapped_column(String(64), primary_key=True)
    feature_version: Mapped[str] = mapped_column(String(32))
    before: Mapped[date] = mapped_column(Date)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    seq: Mapped[int] = mapped_column(Integer)


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


class FeedState(Base):
    """What was last read from a feed, shared by every worker host: validators for a conditional GET, outcomes."""

    __tablename__ = "feed_state"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    etag: Mapped[str | None] = mapped_column(String(512), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(128), nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 of the last file ingested
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    failures: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)  # reason -> count, ever
    last_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Lease(Base):
    """A named lock every host sees through the store (``MatchStore.take_lease``): one retrain at a time, whether
    beat's task or ``matchcast retrain`` started it. It lapses at ``expires_at``, so a holder that died frees it."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease, since when and until when at most."""

    holder: str
    acquired_at: datetime
    expires_at: datetime


class PredictionLogRow(Base):
    """One prediction a worker served (or, ``shadow``, computed for the challenger and never returned).

    Written in batches by ``service.prediction_log``; read by the live scores (``service.live``)."""

    __tablename__ = "prediction_log"
    __table_args__ = (Index("ix_prediction_log_match_served", "match_id", "served_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    match_id: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(32))
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(8))
    feature_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    feature_revision: Mapped[str | None] = mapped_column(String(64), nullable=True)
    features_as_of: Mapped[date | None] = mapped_column(Date, nullable=True)
    p_home: Mapped[float] = mapped_column(Float)
    p_draw: Mapped[float] = mapped_column(Float)
    p_away: Mapped[float] = mapped_column(Float)
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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


class MatchWithFeatures(NamedTuple):
    """A match with its stored features."""

    match: MatchRow
    feature_version: str
    values: list[float]
    revision: str | None
    as_of: date | None

    @classmethod
    def of(cls, m: Match, f: MatchFeatures) -> MatchWithFeatures:
        """Copy mapped rows into plain data."""
        return cls(MatchRow.of(m), f.feature_version, list(f.values), f.revision, f.as_of)


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
        add_missing_columns(engine)
    except OperationalError as exc:  # the database may be down for now; queries will say so and be retried
        log.warning("could not create tables yet: %s", type(exc).__name__)
    return engine


def add_missing_columns(engine: Engine) -> list[str]:
    """Bring tables made by an older version up to date: add each mapped nullable column a table lacks
    (``ALTER TABLE ... ADD COLUMN``, SQLite and PostgreSQL alike) and each missing index; returns what was added.

    Only nullable columns can be added this way (old rows get NULL); a new required column needs a migration."""
    added: list[str] = []
    found = inspect(engine)
    present = set(found.get_table_names())
    preparer = engine.dialect.identifier_preparer
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in present:
                continue
            have = {c["name"] for c in found.get_columns(table.name)}
            for col in table.columns:
                if col.name in have:
                    continue
                if not col.nullable:
                    raise RuntimeError(f"table {table.name} lacks the required column {col.name}: migrate it")
                kind = col.type.compile(dialect=engine.dialect)
                conn.execute(
                    text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.quote(col.name)} {kind}")
                )
                added.append(f"{table.name}.{col.name}")
            for index in table.indexes:
                index.create(conn, checkfirst=True)
    if added:
        log.info("added columns to an existing store: %s", ", ".join(added))
    return added


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

    def take_lease(self, name: str, holder: str, ttl_s: float) -> LeaseHolder | None:
        """Take the lease ``name`` for ``ttl_s`` seconds: None when taken, else who holds it (unexpired).

        A free or lapsed lease is taken by one conditional write, so of two hosts asking at once one gets it."""
        now = datetime.now(UTC)
        values = {"holder": holder, "acquired_at": now, "expires_at": now + timedelta(seconds=ttl_s)}
        with self.session() as s:
            lapsed = update(Lease).where(Lease.name == name, Lease.expires_at <= now).values(**values)
            if getattr(s.execute(lapsed), "rowcount", 0):
                return None
            try:
                with s.begin_nested():
                    s.add(Lease(name=name, **values))
                return None
            except IntegrityError:
                held = s.get(Lease, name, populate_existing=True)
        if held is None:  # released between the two writes: ask again
            return self.take_lease(name, holder, ttl_s)
        return LeaseHolder(held.holder, as_utc(held.acquired_at), as_utc(held.expires_at))

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease back (only ``holder``'s own: a lapsed one another took stays theirs)."""
        with self.session() as s:
            s.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))

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

    def get_with_features(self, match_id: int) -> MatchWithFeatures | None:
        """A match with its features, or None if either is missing."""
        return self.features_for([match_id]).get(match_id)

    def features_for(self, match_ids: Sequence[int]) -> dict[int, MatchWithFeatures]:
        """Matches with their features, in one query: {match_id: (match, feature_version, values, ...)}."""
        if not match_ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(Match, MatchFeatures)
                .join(MatchFeatures, MatchFeatures.match_id == Match.match_id)
                .where(Match.match_id.in_(list(match_ids)))
            ).all()
            return {m.match_id: MatchWithFeatures.of(m, f) for m, f in rows}

    def revisions_since(self, seq: int | None) -> tuple[int, dict[int, str | None]]:
        """Feature rows written after change ``seq`` (None: all): (the latest seq seen, {match_id: revision}).

        Rows of a store made before revisions existed (``seq`` NULL) come only with None; the refresh that gives
        them a revision gives them a change number too."""
        with self.session() as s:
            stmt = select(MatchFeatures.match_id, MatchFeatures.revision, MatchFeatures.seq)
            rows = s.execute(stmt.where(MatchFeatures.seq > seq) if seq is not None else stmt)
            latest, out = seq or 0, {}
            for mid, rev, row_seq in rows:
                out[int(mid)] = rev
                latest = max(latest, row_seq or 0)
            return latest, out

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


def as_utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; the store writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
