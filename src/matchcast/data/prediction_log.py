"""The prediction log's table operations: a batched insert, and the counted predictions of scored matches.

Which prediction of a match counts (README "Live scores"): for each model version, and for shadow rows apart, the
last one served before the store got the match's result (``served_at < matches.result_at``, the latest
``served_at``, then the latest row id). Both times are the store's wall clock, so a replayed season (whose
results arrive long after their match dates) counts the forecasts made before each result came in.

Retention (``prune_log``): a row older than the retention that can no longer count is deleted. What can count
is kept however old: per match, model version and shadow flag, the row that counts now (scored matches) or the
latest one (matches still to play, whose last prediction before the result will count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, literal, select

from matchcast.data.store import Match, MatchRow, MatchStore, PredictionLogRow, as_utc


def write_log_rows(store: MatchStore, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts keyed by column) in one transaction: one cached ``INSERT`` executed over all of them
    (the driver's executemany). A literal multi-row ``VALUES`` statement was measured 5x slower: SQLAlchemy
    compiles it anew for every batch (BENCHMARKS.md, "The prediction log")."""
    if not rows:
        return
    with store.session() as s:
        s.execute(insert(PredictionLogRow), list(rows))


@dataclass(frozen=True)
class CountedPrediction:
    """The prediction of a scored match that counts for one model version (served, or shadow)."""

    match: MatchRow
    result_at: datetime
    model_version: str
    shadow: bool
    source: str
    probabilities: tuple[float, float, float]
    served_at: datetime
    feature_revision: str | None


def counted_predictions(store: MatchStore) -> list[CountedPrediction]:
    """Every counted prediction: one per scored match, model version and shadow flag (see the module's rule)."""
    p, m = PredictionLogRow, Match
    rank = (
        func.row_number()
        .over(partition_by=(p.match_id, p.model_version, p.shadow), order_by=(p.served_at.desc(), p.id.desc()))
        .label("rank")
    )
    ranked = (
        select(
            p.match_id,
            p.model_version,
            p.shadow,
            p.source,
            p.p_home,
            p.p_draw,
            p.p_away,
            p.served_at,
            p.feature_revision,
            rank,
        )
        .join(m, m.match_id == p.match_id)
        .where(and_(m.result.is_not(None), m.result_at.is_not(None), p.served_at < m.result_at))
        .subquery()
    )
    stmt = (
        select(ranked, m.league, m.season, m.date, m.home_team, m.away_team, m.home_goals, m.away_goals, m.result)
        .add_columns(m.result_at)
        .join(m, m.match_id == ranked.c.match_id)
        .where(ranked.c.rank == 1)
        .order_by(m.date, m.match_id, ranked.c.model_version, ranked.c.shadow)
    )
    with store.session() as s:
        rows = s.execute(stmt).all()
    return [
        CountedPrediction(
            match=MatchRow(
                int(r.match_id),
                r.league,
                r.season,
                r.date,
                r.home_team,
                r.away_team,
                r.home_goals,
                r.away_goals,
                r.result,
            ),
            result_at=as_utc(r.result_at),
            model_version=r.model_version,
            shadow=bool(r.shadow),
            source=r.source,
            probabilities=(float(r.p_home), float(r.p_draw), float(r.p_away)),
            served_at=as_utc(r.served_at),
            feature_revision=r.feature_revision,
        )
        for r in rows
    ]


def result_counts(store: MatchStore, leagues: Sequence[str]) -> list[tuple[str, date, str, int]]:
    """Finished matches of ``leagues`` as (league, date, result, how many), oldest first: the frequency baseline's
    history in one grouped query instead of every match."""
    if not leagues:
        return []
    m = Match
    stmt = (
        select(m.league, m.date, m.result, func.count())
        .where(m.result.is_not(None), m.league.in_(list(leagues)))
        .group_by(m.league, m.date, m.result)
        .order_by(m.date)
    )
    with store.session() as s:
        return [(str(lg), d, str(res), int(n)) for lg, d, res, n in s.execute(stmt)]


def prune_log(store: MatchStore, served_before: datetime, chunk: int = 5000) -> int:
    """Delete the rows served before ``served_before`` that can no longer count (see the module's notes), in
    transactions of ``chunk`` rows so writers never wait long; returns how many were deleted."""
    p, m = PredictionLogRow, Match
    # Rows served before the match's result first (those can count), then the newest: rank 1 is the keeper.
    before_result = case((and_(m.result_at.is_not(None), p.served_at >= m.result_at), literal(1)), else_=literal(0))
    rank = (
        func.row_number()
        .over(
            partition_by=(p.match_id, p.model_version, p.shadow),
            order_by=(before_result, p.served_at.desc(), p.id.desc()),
        )
        .label("rank")
    )
    ranked = select(p.id, p.served_at, rank).outerjoin(m, m.match_id == p.match_id).subquery()
    doomed = select(ranked.c.id).where(ranked.c.rank > 1, ranked.c.served_at < served_before)
    with store.session() as s:
        ids = list(s.scalars(doomed))
    for i in range(0, len(ids), chunk):
        with store.session() as s:
            s.execute(delete(p).where(p.id.in_(ids[i : i + chunk])))
    return len(ids)
