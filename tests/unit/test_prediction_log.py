"""The prediction log's writer (batches, outages and a full buffer never reach a prediction), which prediction of a
match counts, ``matches.result_at`` as ingest sets it, and the live gate of ``matchcast promote --live``."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from matchcast.data.ingest import bundled_files, ingest
from matchcast.data.prediction_log import counted_predictions, prune_log, write_log_rows
from matchcast.data.store import MatchStore
from matchcast.schemas import LiveComparison, LivePaired
from matchcast.service.live import live_gate
from matchcast.service.prediction_log import PredictionLogWriter, ServedLog, log_row
from tests.conftest import free_port

LEAGUE = "serie-a"


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("prediction_log_dropped_total", {"reason": reason}) or 0.0


def prediction(match_id: int, served_at: datetime, p_home: float = 0.5, version: str = "1") -> dict[str, Any]:
    return {
        "match_id": match_id,
        "model_version": version,
        "feature_version": "v-test",
        "probabilities": {"home": p_home, "draw": 0.3, "away": round(0.7 - p_home, 12)},
        "predicted_at": served_at.isoformat(),
    }


@pytest.fixture
def season(tmp_path: Path) -> tuple[MatchStore, Path]:
    """A store holding one bundled season as of 2026-04-01, and a copy of its file to ingest the results from."""
    source = next(p for p in bundled_files() if p.parent.name == LEAGUE and p.stem.endswith("2526"))
    copy = tmp_path / LEAGUE / source.name
    copy.parent.mkdir()
    shutil.copy(source, copy)
    store = MatchStore(f"sqlite:///{tmp_path / 'store.db'}")
    ingest(store, [copy], as_of=date(2026, 4, 1))
    return store, copy


def test_a_store_outage_drops_rows_and_counts_them_and_never_raises() -> None:
    store = MatchStore(f"postgresql+psycopg://u:p@127.0.0.1:{free_port()}/nothing")  # nothing listens there
    writer = PredictionLogWriter(store, flush_s=60, flush_rows=1000, max_rows=1000)
    log = ServedLog(writer)
    before = dropped("store_error")
    log.served([prediction(1, datetime.now(UTC)), prediction(2, datetime.now(UTC))], np.zeros((2, 3)), "sync")
    assert writer.pending() == 2
    assert writer.flush() == 0
    assert dropped("store_error") - before == 2 and writer.pending() == 0


def test_a_full_buffer_keeps_what_fits_and_counts_the_rest(season: tuple[MatchStore, Path]) -> None:
    store, _ = season
    writer = PredictionLogWriter(store, flush_s=60, flush_rows=10_000, max_rows=100)
    before = dropped("buffer_full")
    now = datetime.now(UTC)
    ServedLog(writer).served([prediction(1, now)] * 150, np.zeros((150, 3)), "async")
    assert writer.pending() == 100 and dropped("buffer_full") - before == 50
    assert writer.flush() == 100


def test_a_broken_prediction_is_not_recorded_and_does_not_raise(season: tuple[MatchStore, Path]) -> None:
    writer = PredictionLogWriter(season[0], flush_s=60, flush_rows=10, max_rows=100)
    before = dropped("unrecordable")
    ServedLog(writer).served([{"match_id": 1}], np.zeros((1, 3)), "sync")
    assert writer.pending() == 0 and dropped("unrecordable") - before == 1


def test_the_thread_writes_in_batches_and_the_last_prediction_before_the_result_counts(
    season: tuple[MatchStore, Path],
) -> None:
    store, copy = season
    upcoming = [m.match_id for m in store.upcoming(league=LEAGUE, limit=3)[1]]
    writer = PredictionLogWriter(store, flush_s=0.05, flush_rows=2, max_rows=1000)
    writer.start()
    log = ServedLog(writer)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    log.served([prediction(upcoming[0], t0, 0.40), prediction(upcoming[1], t0, 0.45)], np.zeros((2, 3)), "sync")
    log.served([prediction(upcoming[0], t0 + timedelta(seconds=1), 0.55)], np.zeros((1, 3)), "batch")
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while writer.pending() and datetime.now(UTC) < deadline:
        writer._wake.wait(0.05)
    assert writer.pending() == 0
    assert counted_predictions(store) == []  # no result yet
    ingest(store, [copy])  # the results arrive now
    # A prediction made after the result arrived is no forecast: it never counts.
    log.served([prediction(upcoming[0], datetime.now(UTC) + timedelta(seconds=1), 0.90)], np.zeros((1, 3)), "sync")
    writer.close()
    counted = {(c.match.match_id, c.model_version, c.shadow): c for c in counted_predictions(store)}
    assert set(counted) == {(upcoming[0], "1", False), (upcoming[1], "1", False)}
    assert counted[(upcoming[0], "1", False)].probabilities[0] == pytest.approx(0.55)
    assert counted[(upcoming[0], "1", False)].source == "batch"
    assert counted[(upcoming[1], "1", False)].probabilities[0] == pytest.approx(0.45)


def test_pruning_deletes_old_rows_that_can_no_longer_count_and_keeps_what_counts(
    season: tuple[MatchStore, Path],
) -> None:
    from sqlalchemy import select

    from matchcast.data.store import PredictionLogRow

    store, copy = season
    a, b, c = (m.match_id for m in store.upcoming(league=LEAGUE, limit=3)[1])
    old = datetime.now(UTC) - timedelta(days=40)
    rows = [
        log_row(prediction(a, old, 0.40), "sync"),  # superseded by the later ones: goes
        log_row(prediction(a, old + timedelta(hours=1), 0.41), "sync"),  # superseded by the one below: goes
        log_row(prediction(b, old, 0.42), "async"),  # b's only row, version 1: kept
        log_row(prediction(b, old, 0.43, version="2"), "async"),  # another version's only row: kept
        {**log_row(prediction(b, old, 0.44), "sync"), "shadow": True},  # a shadow row apart: kept
        log_row(prediction(c, old, 0.45), "sync"),  # c is not played: superseded by a recent one, goes
        log_row(prediction(c, datetime.now(UTC) - timedelta(days=1), 0.46), "sync"),  # recent: kept
    ]
    write_log_rows(store, rows)
    ingest(store, [copy])  # a's result arrives now (b's and c's too: the season file has them all)
    # Written after the result arrived, but served 38 days ago, before it: a's last forecast, the one that counts.
    write_log_rows(store, [log_row(prediction(a, old + timedelta(days=2), 0.47), "sync")])

    def counted() -> dict[tuple[int, str, bool], tuple[float, float, float]]:
        return {(x.match.match_id, x.model_version, x.shadow): x.probabilities for x in counted_predictions(store)}

    counted_before = counted()

    assert prune_log(store, datetime.now(UTC) - timedelta(days=30), chunk=1) == 3
    with store.session() as s:
        left = sorted(s.scalars(select(PredictionLogRow.p_home)))
    assert left == pytest.approx([0.42, 0.43, 0.44, 0.46, 0.47])
    assert counted() == counted_before  # pruning never changes what counts
    assert prune_log(store, datetime.now(UTC) - timedelta(days=30)) == 0
    assert prune_log(store, datetime.now(UTC) + timedelta(days=1)) == 0  # nothing else may go, however old


def test_ingest_sets_result_at_when_a_result_arrives_or_changes(season: tuple[MatchStore, Path]) -> None:
    from sqlalchemy import select

    from matchcast.data.store import Match

    store, copy = season

    def result_at() -> dict[int, datetime | None]:
        with store.session() as s:
            return dict(s.execute(select(Match.match_id, Match.result_at)).tuples().all())

    before = result_at()
    ingest(store, [copy])
    after = result_at()
    arrived = {i for i in after if before[i] is None and after[i] is not None}
    assert arrived and all(before[i] == after[i] for i in after if i not in arrived)  # others keep theirs
    ingest(store, [copy])
    assert result_at() == after  # the same results again: nothing arrived
    lines = copy.read_text().splitlines()
    header = lines[0].split(",")
    hg, ftr = header.index("FTHG"), header.index("FTR")
    row = lines[1].split(",")
    row[hg], row[ftr] = str(int(row[hg]) + 5), "H"  # a corrected score
    copy.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    ingest(store, [copy])
    changed = {i for i, at in result_at().items() if at != after[i]}
    assert len(changed) == 1


def paired(n: int, diff: float, se: float) -> LiveComparison:
    return LiveComparison(
        champion_version="1",
        challenger_version="2",
        windows={"season": LivePaired(n=n, champion_rps=0.2, challenger_rps=0.2 + diff, rps_diff=diff, rps_diff_se=se)},
    )


def test_the_live_gate() -> None:
    assert "no live comparison" in live_gate(None)
    assert "only 10 paired" in live_gate(paired(10, -0.01, 0.001))
    assert "not below zero" in live_gate(paired(100, -0.001, 0.001))  # one standard error is not enough
    assert "not below zero" in live_gate(paired(100, 0.01, 0.001))
    assert live_gate(paired(100, -0.005, 0.002)) == ""
