"""Incremental feature refresh: after any sequence of ingests, the stored rows are exactly what a walk of the whole
store gives (``compute_features``), whether a league resumed from its checkpoint or was walked from the start."""

from __future__ import annotations

import bisect
import logging
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, update

from matchcast.data.features import FEATURE_VERSION, compute_features, feature_revision, refresh_features
from matchcast.data.ingest import bundled_files, ingest
from matchcast.data.store import FeatureCheckpoint, Match, MatchFeatures, MatchStore

LEAGUES = ("premier-league", "serie-a")
FILES = [p for p in bundled_files() if p.parent.name in LEAGUES and p.name >= "season-2425.csv"]


def stored_rows(store: MatchStore) -> dict[int, tuple[list[float], str | None, date | None, int | None]]:
    with store.session() as s:
        rows = s.execute(
            select(
                MatchFeatures.match_id,
                MatchFeatures.values,
                MatchFeatures.revision,
                MatchFeatures.as_of,
                MatchFeatures.seq,
            )
        )
        return {mid: (list(v), rev, as_of, seq) for mid, v, rev, as_of, seq in rows}


def resumed(caplog: pytest.LogCaptureFixture) -> dict[str, bool]:
    out = {}
    for r in caplog.records:
        if r.getMessage().startswith("features_refreshed"):
            fields = dict(kv.split("=") for kv in r.getMessage().split()[1:])
            out[fields["league"]] = fields["resumed"] == "True"
    caplog.clear()
    return out


def assert_as_full(store: MatchStore) -> None:
    matches = store.all_matches()
    full = compute_features(matches)
    rows = stored_rows(store)
    assert {k: v[0] for k, v in rows.items()} == full
    scores = {m.match_id: (m.home_goals, m.away_goals) for m in matches}
    assert all(rev == feature_revision(values, scores[mid]) for mid, (values, rev, _, _) in rows.items())
    results: dict[str, list[date]] = {}
    for m in matches:
        if m.result is not None:
            results.setdefault(m.league, []).append(m.date)
    for m in matches:
        earlier = results.get(m.league, [])[: bisect.bisect_left(results.get(m.league, []), m.date)]
        assert rows[m.match_id][2] == (earlier[-1] if earlier else None)


@pytest.fixture
def store(tmp_path: Path) -> MatchStore:
    return MatchStore(f"sqlite:///{tmp_path / 'm.db'}")


def test_incremental_refresh_equals_a_full_walk_at_every_cut(
    store: MatchStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="matchcast.data.feature_refresh")
    cuts = [date(2024, 11, 1), date(2024, 11, 4), date(2025, 2, 10), date(2026, 1, 5), date(2026, 3, 9)]
    ingest(store, FILES, as_of=cuts[0])
    assert refresh_features(store) == store.count()
    assert resumed(caplog) == dict.fromkeys(LEAGUES, False)  # no checkpoint yet
    assert_as_full(store)
    for cut in cuts[1:]:
        before = stored_rows(store)
        report = ingest(store, FILES, as_of=cut)
        assert report.updated > 0
        written = refresh_features(store)
        assert resumed(caplog) == dict.fromkeys(LEAGUES, True)
        assert_as_full(store)
        after = stored_rows(store)
        moved = {k for k in after if after[k][1] != before[k][1]}
        assert 0 < written == len(moved) < len(after)  # only the rows that changed are written
        assert len({after[k][3] for k in moved}) == 1 and min(after[k][3] or 0 for k in moved) > max(
            v[3] or 0 for v in before.values()
        )  # one new change number, above every earlier one
        assert all(after[k] == before[k] for k in after if k not in moved)
    assert refresh_features(store) == 0  # nothing new: nothing written


def test_a_result_changes_the_revision_of_its_own_match_not_its_values(store: MatchStore) -> None:
    ingest(store, FILES, as_of=date(2026, 3, 1))
    refresh_features(store)
    before = stored_rows(store)
    ingest(store, FILES, as_of=date(2026, 3, 9))
    refresh_features(store)
    after = stored_rows(store)
    window = [m for m in store.all_matches() if m.result is not None and date(2026, 3, 1) <= m.date < date(2026, 3, 9)]
    first_day = min(m.date for m in window)  # every result before it was in at the first cut already
    played = [m.match_id for m in window if m.date == first_day]
    assert played
    for mid in played:
        assert after[mid][0] == before[mid][0]  # its features come from earlier matches only
        assert after[mid][1] != before[mid][1]  # but a prediction made before its result is not current any more
    assert_as_full(store)


def test_a_rewritten_past_walks_that_league_again(store: MatchStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="matchcast.data.feature_refresh")
    ingest(store, FILES, as_of=date(2026, 2, 1))
    refresh_features(store)
    caplog.clear()
    with store.session() as s:
        old = s.scalars(
            select(Match).where(Match.league == "serie-a", Match.date < date(2025, 9, 1), Match.result == "H")
        ).first()
        assert old is not None
        s.execute(update(Match).where(Match.match_id == old.match_id).values(home_goals=0, away_goals=3, result="A"))
    assert refresh_features(store) > 0
    assert resumed(caplog) == {"premier-league": True, "serie-a": False}
    assert_as_full(store)


def test_a_lost_checkpoint_or_missing_rows_walk_from_the_start(
    store: MatchStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="matchcast.data.feature_refresh")
    ingest(store, FILES, as_of=date(2026, 2, 1))
    refresh_features(store)
    with store.session() as s:
        s.execute(
            update(FeatureCheckpoint)
            .where(FeatureCheckpoint.league == "premier-league")
            .values(feature_version="v0-00000000")
        )
        victim = s.scalars(select(Match.match_id).where(Match.league == "serie-a")).first()
        s.execute(MatchFeatures.__table__.delete().where(MatchFeatures.match_id == victim))
    caplog.clear()
    assert refresh_features(store) == 1  # the missing row; the other league's rows were right already
    assert resumed(caplog) == {"premier-league": False, "serie-a": False}
    assert_as_full(store)
    with store.session() as s:
        assert set(s.scalars(select(FeatureCheckpoint.feature_version))) == {FEATURE_VERSION}
