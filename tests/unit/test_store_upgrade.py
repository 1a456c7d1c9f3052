"""A store made before the feature revisions existed keeps working: get_engine adds the missing nullable columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from matchcast.data.features import features_stale, refresh_features
from matchcast.data.store import MatchStore, add_missing_columns, get_engine

OLD_SCHEMA = (
    "CREATE TABLE matches (match_id INTEGER PRIMARY KEY, league VARCHAR(64), season VARCHAR(9), date DATE,"
    " home_team VARCHAR(64), away_team VARCHAR(64), home_goals INTEGER, away_goals INTEGER, result VARCHAR(1),"
    " referee VARCHAR(64), stats JSON, source VARCHAR(255), CONSTRAINT uq_match UNIQUE (league, date, home_team,"
    " away_team))",
    "CREATE TABLE match_features (match_id INTEGER PRIMARY KEY REFERENCES matches (match_id) ON DELETE CASCADE,"
    ' feature_version VARCHAR(32), "values" JSON)',
    "INSERT INTO matches VALUES (1, 'premier-league', '2025/26', '2025-08-15', 'A', 'B', 2, 1, 'H', NULL, NULL, 'x')",
    "INSERT INTO matches VALUES (2, 'premier-league', '2025/26', '2025-08-22', 'B', 'A', NULL, NULL, NULL, NULL,"
    " NULL, 'x')",
    "INSERT INTO match_features VALUES (1, 'v3-00000000', '[0.0]')",
)


def make_old_store(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        for stmt in OLD_SCHEMA:
            c.execute(text(stmt))
    engine.dispose()


def test_an_old_store_gains_the_new_columns_and_refreshes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_old_store(url)
    get_engine.cache_clear()
    store = MatchStore(url)
    columns = {c["name"] for c in inspect(store.engine).get_columns("match_features")}
    assert {"revision", "as_of", "seq"} <= columns
    assert "ix_match_features_seq" in {i["name"] for i in inspect(store.engine).get_indexes("match_features")}
    assert add_missing_columns(store.engine) == []  # the second time there is nothing to add
    found = store.get_with_features(1)
    assert found is not None and found.revision is None and found.as_of is None  # old rows read as before
    assert features_stale(store)
    assert refresh_features(store) == 2
    found = store.get_with_features(2)
    assert found is not None and found.revision is not None and str(found.as_of) == "2025-08-15"
    get_engine.cache_clear()


def test_a_missing_required_column_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'older.db'}"
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE feature_sequence (id INTEGER PRIMARY KEY)"))
    with pytest.raises(RuntimeError, match="feature_sequence lacks the required column seq"):
        add_missing_columns(engine)
    engine.dispose()


def test_the_api_reads_every_revision_once_then_only_what_changed(tmp_path: Path) -> None:
    from matchcast.service.match_index import FeatureRevisions

    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_old_store(url)
    get_engine.cache_clear()
    store = MatchStore(url)
    revisions = FeatureRevisions(store)
    assert revisions.refresh() == 1 and revisions.get(1) is None  # the old row, without a revision yet
    assert revisions.refresh() == 0  # rows without a change number are not read again
    refresh_features(store)
    assert revisions.refresh() == 2
    found = store.get_with_features(2)
    assert found is not None and revisions.get(2) == found.revision is not None
    assert revisions.refresh() == 0
    get_engine.cache_clear()
