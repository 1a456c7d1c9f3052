"""Stored features kept up to date incrementally: per-league checkpoints, one transaction, a change sequence.

A league's features depend on that league's matches only. Each league keeps a checkpoint in the store (shared
by every host): the feature state before its first match without a result, with a digest of every match dated
before that. A refresh resumes each league from its checkpoint and walks only the matches from that date on
(the open fixtures and whatever results came in for them); when the digest differs (a past score changed, a
match was added or removed before the checkpoint), when rows of that league are missing, or when stored rows
hold another feature version, the league is walked from its first match.

The walk itself (``data.features``) is passed in: this module knows the tables, not the features. Checkpoints
are pickled states: the match store is trusted as the model registry is (whose models are pickles too).

The refresh takes its change number first: that locks ``feature_sequence`` (a row lock on PostgreSQL, the write
lock on SQLite) until it commits, so refreshes of several hosts take turns and commit in the order of their numbers
(a reader that has seen number N has seen every number below it), and each reads the matches as committed when its
turn came. A walk from the start holds that lock for its length (the first ingest, a new feature version).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Text, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session

from matchcast.data.store import FeatureCheckpoint, FeatureSequence, Match, MatchFeatures, MatchStore

log = logging.getLogger(__name__)
Computed = dict[int, tuple[list[float], date | None]]
# (a league's matches to walk, the date to checkpoint before, the state to resume or None) -> (rows, checkpoint)
WalkLeague = Callable[[Sequence["StoredMatch"], date, Any], tuple[Computed, Any]]


@dataclass(slots=True)
class StoredMatch:
    """What the feature walk reads of a stored match."""

    match_id: int
    league: str
    season: str
    date: date
    home_team: str
    away_team: str
    home_goals: int | None
    away_goals: int | None
    stats: dict[str, int] | None


class _Unchanged(Exception):
    """Nothing to write: the refresh's transaction is rolled back (its change number is not used)."""


def fingerprint(rows: Sequence[tuple[Any, ...]], h: Any = None) -> Any:
    """A digest (a hashlib object: ``.hexdigest()``) of stored match rows (``_COLUMNS``, in order), continuing ``h``
    if given. Stats are digested as stored text: the same stats written anew the same way digest alike; any other
    difference only costs a walk from the start."""
    h = h or hashlib.sha256()
    h.update("".join([f"{r!r}\n" for r in rows]).encode())  # row by row: digesting a, then b, equals a + b
    return h


def checkpoint_date(rows: Sequence[tuple[Any, ...]]) -> date:
    """The date of a league's first match without a result, or the day after its last match."""
    return next((r[3] for r in rows if r[6] is None), rows[-1][3] + timedelta(days=1))


def next_seq(s: Session) -> int:
    """Take the next change number; the row lock (or SQLite's write lock) is held until the transaction ends."""
    seq = s.execute(
        update(FeatureSequence)
        .where(FeatureSequence.id == 1)
        .values(seq=FeatureSequence.seq + 1)
        .returning(FeatureSequence.seq)
    ).scalar()
    if seq is None:
        s.execute(insert(FeatureSequence).values(id=1, seq=1))
        seq = 1
    return int(seq)


_COLUMNS = (
    Match.match_id,
    Match.league,
    Match.season,
    Match.date,
    Match.home_team,
    Match.away_team,
    Match.home_goals,
    Match.away_goals,
    cast(Match.stats, Text),
)


def _stored_match(row: tuple[Any, ...]) -> StoredMatch:
    stats = json.loads(row[8]) if row[8] else None
    return StoredMatch(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], stats)


def _leagues(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every match as a plain row of ``_COLUMNS``, by league, in walking order."""
    rows = [tuple(r) for r in conn.execute(select(*_COLUMNS).order_by(Match.league, Match.date, Match.match_id))]
    return {league: list(group) for league, group in groupby(rows, key=lambda r: r[1])}


def _first_missing(conn: Connection) -> dict[str, date]:
    """Per league, the date of its first match without a feature row."""
    missing = (
        select(Match.league, func.min(Match.date))
        .outerjoin(MatchFeatures, MatchFeatures.match_id == Match.match_id)
        .where(MatchFeatures.match_id.is_(None))
        .group_by(Match.league)
    )
    return {league: day for league, day in conn.execute(missing)}


def _current(conn: Connection, version: str) -> bool:
    """Whether every stored row is of ``version`` and has a revision."""
    other = (MatchFeatures.feature_version != version) | MatchFeatures.revision.is_(None)
    return conn.execute(select(MatchFeatures.match_id).where(other).limit(1)).first() is None


def _stored(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[str, str | None, date | None]]:
    """(feature_version, revision, as_of) of the stored rows of these matches."""
    cols = (MatchFeatures.match_id, MatchFeatures.feature_version, MatchFeatures.revision, MatchFeatures.as_of)
    out: dict[int, tuple[str, str | None, date | None]] = {}
    for i in range(0, len(ids), 5000):
        part = list(ids[i : i + 5000])
        out |= {mid: (ver, rev, as_of) for mid, ver, rev, as_of in conn.execute(select(*cols).where(cols[0].in_(part)))}
    return out


Score = tuple[int | None, int | None]  # a match's own (home_goals, away_goals), None before it is played


def refresh(
    store: MatchStore, version: str, walk_league: WalkLeague, revision_of: Callable[[list[float], Score], str]
) -> int:
    """Refresh stored features (see the module's notes); returns how many rows were written or removed.

    A row's revision digests its values and its match's own score, so it also changes when that match's result
    arrives (the values do not: they come from earlier matches only)."""
    try:
        with store.session() as s:
            seq = next_seq(s)
            conn = s.connection()
            leagues = _leagues(conn)
            current, missing = _current(conn, version), _first_missing(conn)
            checkpoints = {cp.league: cp for cp in s.scalars(select(FeatureCheckpoint))}
            new: list[dict[str, Any]] = []
            changed: list[dict[str, Any]] = []
            saved_checkpoints = 0
            for league, rows in leagues.items():
                cp = checkpoints.pop(league, None)
                dates = [r[3] for r in rows]
                resume, n, digest = None, 0, hashlib.sha256()
                if cp is not None and current and cp.feature_version == version:
                    head = bisect.bisect_left(dates, cp.before)
                    if not missing.get(league, cp.before) < cp.before:
                        digest = fingerprint(rows[:head])
                        if digest.hexdigest() == cp.fingerprint:
                            resume, n = pickle.loads(zlib.decompress(cp.state)), head
                        else:
                            digest = hashlib.sha256()
                before = checkpoint_date(rows)
                computed, state = walk_league([_stored_match(r) for r in rows[n:]], before, resume)
                stored = _stored(conn, list(computed))
                scores = {r[0]: (r[6], r[7]) for r in rows[n:]}
                before_writes = len(new) + len(changed)
                for mid, (values, as_of) in computed.items():
                    rev = revision_of(values, scores[mid])
                    row = {"match_id": mid, "feature_version": version, "values": values}
                    row |= {"revision": rev, "as_of": as_of, "seq": seq}
                    old = stored.get(mid)
                    if old is None:
                        new.append(row)
                    elif old != (version, rev, as_of):
                        changed.append(row)
                log.info(
                    "features_refreshed league=%s resumed=%s walked=%d written=%d",
                    league,
                    resume is not None,
                    len(rows) - n,
                    len(new) + len(changed) - before_writes,
                )
                digest = fingerprint(rows[n : bisect.bisect_left(dates, before)], digest).hexdigest()
                if cp is None or (cp.feature_version, cp.before, cp.fingerprint) != (version, before, digest):
                    saved_checkpoints += 1
                    blob = zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)
                    saved = {"feature_version": version, "before": before, "fingerprint": digest, "state": blob}
                    if cp is None:
                        s.execute(insert(FeatureCheckpoint).values(league=league, seq=seq, **saved))
                    else:
                        where = FeatureCheckpoint.league == league
                        s.execute(update(FeatureCheckpoint).where(where).values(seq=seq, **saved))
            if checkpoints:  # leagues no longer in the store
                saved_checkpoints += 1
                s.execute(delete(FeatureCheckpoint).where(FeatureCheckpoint.league.in_(list(checkpoints))))
            if new:
                s.execute(insert(MatchFeatures), new)
            if changed:
                s.execute(update(MatchFeatures), changed)
            orphans = select(MatchFeatures.match_id).where(MatchFeatures.match_id.not_in(select(Match.match_id)))
            gone = list(s.scalars(orphans))
            if gone:
                s.execute(delete(MatchFeatures).where(MatchFeatures.match_id.in_(gone)))
            written = len(new) + len(changed) + len(gone)
            if not written and not saved_checkpoints:
                raise _Unchanged
            return written
    except _Unchanged:
        return 0
