"""Walk-forward evaluation on a small slice: outputs, baselines, and no look-ahead."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matchcast.data.features import compute_features
from matchcast.data.ingest import bundled_files, parse_file
from matchcast.errors import InvalidInput
from matchcast.model.evaluate import (
    ALL,
    MATCH_COLUMNS,
    MODELS,
    EvalConfig,
    Evaluation,
    Period,
    parse_bound,
    prob_columns,
    walk_forward,
    write_outputs,
)

pytest.importorskip("penaltyblog")

WINDOW = Period(start=date(2023, 8, 1), end=date(2023, 10, 31), leagues=("premier-league",))
FAST = EvalConfig(refit_days=28, dc_refit_days=14)


@dataclass(frozen=True)
class M:
    match_id: int
    league: str
    season: str
    date: date
    home_team: str
    away_team: str
    home_goals: int | None
    away_goals: int | None
    stats: dict[str, int] | None = None


@cache
def slice_rows(league: str = "premier-league", seasons: tuple[str, ...] = ("2122", "2223", "2324")) -> tuple[M, ...]:
    """A few seasons of one league from the bundled data."""
    out: list[M] = []
    for p in bundled_files():
        if p.parent.name == league and p.stem[-4:] in seasons:
            rows, _ = parse_file(p)
            out += [
                M(len(out) + i + 1, r.league, r.season, r.date, r.home_team, r.away_team, r.home_goals, r.away_goals)
                for i, r in enumerate(rows)
            ]
    return tuple(out)


def run(rows: tuple[M, ...] | list[M], period: Period = WINDOW) -> Evaluation:
    return walk_forward(rows, compute_features(rows), period, FAST)


@cache
def small() -> Evaluation:
    return run(slice_rows())


def test_per_match_columns_and_probabilities() -> None:
    ev = small()
    frame = ev.predictions
    expected = [*MATCH_COLUMNS, *(c for m in MODELS for c in prob_columns(m))]
    assert list(frame.columns) == expected
    assert "dc_p_home" in frame and "freq_p_draw" in frame and "uniform_p_away" in frame
    in_window = [m for m in slice_rows() if WINDOW.contains(m)]
    assert len(frame) == len(in_window) > 50
    for model in MODELS:
        p = frame[list(prob_columns(model))].to_numpy()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
        assert (p > 0).all() and (p < 1).all()
    assert (frame["date"] >= "2023-08-01").all() and (frame["date"] <= "2023-10-31").all()


def test_summary_has_every_model_and_dixon_coles_beats_uniform() -> None:
    ev = small()
    s = ev.summary
    pooled = ev.pooled()
    assert pooled["n"] == len(ev.predictions)
    for model in MODELS:
        for metric in ("rps", "log_loss", "brier", "accuracy"):
            assert f"{model}_{metric}" in s.columns
    assert {(ALL, ALL), ("premier-league", ALL), ("premier-league", "2023/24")} <= set(
        zip(s.league, s.season, strict=True)
    )
    assert pooled["uniform_rps"] == pytest.approx(
        np.mean([1 / 9 if r == 0 else 5 / 18 for r in np.sign(ev.predictions.away_goals - ev.predictions.home_goals)])
    )
    assert pooled["dc_rps"] < pooled["uniform_rps"] - 0.01
    assert pooled["matchcast_rps"] < pooled["uniform_rps"]
    assert ev.counts["dc_fits"] >= 5 and ev.counts["model_refits"] >= 3
    d = ev.paired["dc"]
    assert d["se"] > 0 and d["mean"] == pytest.approx(pooled["matchcast_rps"] - pooled["dc_rps"])


def test_outputs_are_written(tmp_path: Path) -> None:
    paths = write_outputs(small(), tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == set(paths)
    frame = pd.read_csv(paths["predictions.csv"])
    assert "p_home" in frame.columns and len(frame) == len(small().predictions)
    summary = pd.read_csv(paths["summary.csv"])
    assert {"matchcast_rps", "dc_rps", "freq_rps", "uniform_rps", "rps_diff_vs_dc_se"} <= set(summary.columns)
    assert paths["calibration.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cal = pd.read_csv(paths["calibration.csv"])
    assert set(cal["model"]) == {"matchcast", "dc"} and set(cal["outcome"]) == {"H", "D", "A"}
    assert '"paired_rps_difference"' in paths["summary.json"].read_text()


def test_later_results_do_not_change_earlier_predictions() -> None:
    rows = slice_rows()
    cut = date(2023, 9, 20)
    flipped = [
        replace(m, home_goals=m.away_goals, away_goals=(m.home_goals or 0) + 2) if m.date >= cut else m for m in rows
    ]
    period = Period(start=date(2023, 8, 1), end=date(2023, 10, 31), leagues=("premier-league",))
    a, b = run(rows, period).predictions, run(flipped, period).predictions
    before = a["date"] < cut.isoformat()
    cols = [c for m in MODELS for c in prob_columns(m)]
    assert before.sum() > 30
    pd.testing.assert_frame_equal(a.loc[before, cols], b.loc[before, cols])
    later = ~before & (a["date"] > "2023-10-10")
    assert not np.allclose(a.loc[later, "p_home"], b.loc[later, "p_home"])  # the test can fail: later ones move


def test_window_bounds_parse_and_filter() -> None:
    assert parse_bound("2020/21") == "2020/21"
    assert parse_bound("2021-03-04") == date(2021, 3, 4)
    for bad in ("2020/22", "2020", "2021-13-01", "last year"):
        with pytest.raises(InvalidInput):
            parse_bound(bad)
    m = slice_rows()[0]
    assert Period(start="2021/22", end="2021/22").contains(m)
    assert not Period(start="2022/23").contains(m)
    assert not Period(leagues=("serie-a",), start=None, end=None).contains(m)
    assert not Period(start=None, end=m.date.replace(day=1)).contains(m) or m.date.day == 1


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no finished match"):
        run(slice_rows(), Period(start="2030/31", end="2030/31"))
