"""Ingestion: real files in, checked rows out; refusals name the file, line and column."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import update

from matchcast.config import Settings
from matchcast.data.features import FEATURE_VERSION, features_stale, refresh_features
from matchcast.data.ingest import bundled_files, ingest, parse_file, season_of
from matchcast.data.store import MatchFeatures, MatchStore
from matchcast.errors import IngestError
from matchcast.service.bootstrap import ingest_files
from matchcast.service.wiring import store_for

HEADER = "Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR,HS,AS,HST,AST\n"


@pytest.fixture
def store(tmp_path: Path) -> MatchStore:
    return MatchStore(f"sqlite:///{tmp_path / 'm.db'}")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_bundled_data_is_vendored_in_full() -> None:
    files = bundled_files()
    assert len(files) == 165
    total = sum(len(parse_file(p)[0]) for p in files)
    assert total == 59079


def test_bundled_file_gets_league_and_season_from_its_path() -> None:
    path = next(p for p in bundled_files() if p.parent.name == "serie-a" and p.name == "season-1920.csv")
    rows, held = parse_file(path)
    assert held == 0
    assert {r.league for r in rows} == {"serie-a"}
    # 2019/20 ran into August 2020; the file name, not the date, decides the season.
    assert {r.season for r in rows} == {"2019/20"}
    assert max(r.date for r in rows) >= date(2020, 8, 1)


def test_football_data_layout_with_div_and_short_dates(tmp_path: Path, store: MatchStore) -> None:
    p = write(
        tmp_path,
        "E0.csv",
        HEADER + "E0,15/08/25,Liverpool,Bournemouth,4,2,H,19,10,10,3\n"
        "E0,16/08/2025,Aston Villa,Newcastle,0,0,D,3,16,3,3\n",
    )
    report = ingest(store, [p])
    assert (report.rows, report.inserted) == (2, 2)
    m = store.get(1)
    assert m is not None
    assert (m.league, m.season, m.date, m.result) == ("premier-league", "2025/26", date(2025, 8, 15), "H")


def test_fixtures_with_empty_scores_are_upcoming(tmp_path: Path, store: MatchStore) -> None:
    p = write(tmp_path, "fixtures.csv", HEADER + "SP1,2026-08-20,Sevilla,Betis,,,,,,,\n")
    ingest(store, [p])
    total, rows = store.upcoming()
    assert total == 1 and rows[0].home_team == "Sevilla" and rows[0].result is None


def test_reingest_changes_nothing_and_results_update_fixtures(tmp_path: Path, store: MatchStore) -> None:
    fixtures = write(tmp_path, "f.csv", HEADER + "I1,2026-08-20,Roma,Lazio,,,,,,,\n")
    first = ingest(store, [fixtures])
    again = ingest(store, [fixtures])
    assert (first.inserted, again.inserted, again.updated, again.unchanged) == (1, 0, 0, 1)
    results = write(tmp_path, "r.csv", HEADER + "I1,2026-08-20,Roma,Lazio,2,1,H,10,8,5,3\n")
    after = ingest(store, [results])
    assert (after.inserted, after.updated) == (0, 1)
    m = store.get(1)
    assert m is not None and (m.home_goals, m.away_goals, m.result) == (2, 1, "H")
    assert store.count(with_result=False) == 0


@pytest.mark.parametrize(
    ("row", "line", "column"),
    [
        ("E0,2025-13-45,A,B,1,0,H,1,1,1,1", 3, "Date"),
        ("E0,2025-08-16,A,B,x,0,H,1,1,1,1", 3, "FTHG"),
        ("E0,2025-08-16,A,B,1,,H,1,1,1,1", 3, "FTHG"),
        ("E0,2025-08-16,A,B,1,0,A,1,1,1,1", 3, "FTR"),
        ("E0,2025-08-16,A,A,1,0,H,1,1,1,1", 3, "AwayTeam"),
        ("E0,2025-08-16,A,B,1,0,H,1,1,-4,1", 3, "HST"),
        ("E0,2025-08-16,,B,1,0,H,1,1,1,1", 3, "HomeTeam"),
    ],
)
def test_malformed_row_is_refused_with_its_place(
    tmp_path: Path, store: MatchStore, row: str, line: int, column: str
) -> None:
    p = write(tmp_path, "bad.csv", HEADER + "E0,2025-08-15,C,D,1,1,D,1,1,1,1\n" + row + "\n")
    with pytest.raises(IngestError) as err:
        ingest(store, [p])
    assert (err.value.path, err.value.line, err.value.column) == (str(p), line, column)
    assert str(p) in str(err.value) and f"line {line}" in str(err.value)
    assert store.count() == 0


def test_missing_column_is_named(tmp_path: Path, store: MatchStore) -> None:
    p = write(tmp_path, "nohome.csv", "Div,Date,AwayTeam,FTHG,FTAG\nE0,2025-08-15,B,1,0\n")
    with pytest.raises(IngestError, match=r"line 1, column HomeTeam"):
        ingest(store, [p])


def test_one_bad_file_loads_nothing(tmp_path: Path, store: MatchStore) -> None:
    good = write(tmp_path, "good.csv", HEADER + "E0,2025-08-15,C,D,1,1,D,1,1,1,1\n")
    bad = write(tmp_path, "bad.csv", HEADER + "E0,not-a-date,C,D,1,1,D,1,1,1,1\n")
    with pytest.raises(IngestError):
        ingest(store, [good, bad])
    assert store.count() == 0


def test_file_without_league_needs_one(tmp_path: Path, store: MatchStore) -> None:
    p = write(tmp_path, "x.csv", "Date,HomeTeam,AwayTeam,FTHG,FTAG\n2025-08-15,C,D,1,0\n")
    with pytest.raises(IngestError, match="league"):
        ingest(store, [p])
    assert ingest(store, [p], league="eredivisie").inserted == 1


def test_duplicate_rows_are_refused(tmp_path: Path, store: MatchStore) -> None:
    row = "E0,2025-08-15,C,D,1,1,D,1,1,1,1\n"
    p = write(tmp_path, "dup.csv", HEADER + row + row)
    with pytest.raises(IngestError, match=r"line 3.*duplicate of the match on line 2"):
        ingest(store, [p])


def test_as_of_holds_back_later_results(tmp_path: Path, store: MatchStore) -> None:
    p = write(tmp_path, "s.csv", HEADER + "E0,2026-03-30,C,D,1,1,D,1,1,1,1\nE0,2026-04-02,E,F,3,0,H,1,1,1,1\n")
    report = ingest(store, [p], as_of=date(2026, 4, 1))
    assert report.held_back == 1
    total, rows = store.upcoming()
    assert total == 1 and rows[0].home_team == "E"
    refresh_features(store)
    assert store.get_with_features(rows[0].match_id) is not None


def test_season_of_splits_in_july() -> None:
    assert season_of(date(2025, 8, 1)) == "2025/26"
    assert season_of(date(2026, 5, 1)) == "2025/26"
    assert season_of(date(1999, 12, 31)) == "1999/00"


def test_ingest_refreshes_features_of_another_version(tmp_path: Path) -> None:
    """After the feature code changes, ingesting unchanged files rewrites every row of the old version."""
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'm.db'}")
    rows = "".join(f"E0,2025-08-{d:02d},A{d},B{d},1,0,H,9,7,4,2\n" for d in range(10, 20))
    files = [write(tmp_path, "e.csv", HEADER + rows)]
    first = ingest_files(settings, files)
    assert first.features_changed == 10 and not features_stale(store_for(settings))
    assert ingest_files(settings, files).features_changed == 0  # same code, same data: nothing to do
    with store_for(settings).session() as s:
        s.execute(update(MatchFeatures).values(feature_version="v0-00000000", values=[0.0]))
    assert features_stale(store_for(settings))
    assert ingest_files(settings, files).features_changed == 10
    assert {v for _, v, _ in store_for(settings).feature_table()} == {FEATURE_VERSION}
