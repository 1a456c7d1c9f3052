"""The retraining gate: the weekly walk-forward of two recipes and the promotion rule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import numpy as np
import numpy.typing as npt
import pytest
from threadpoolctl import threadpool_limits

from matchcast.config import Settings
from matchcast.errors import InvalidInput
from matchcast.model.gate import Comparison, GateRule, Recipe, compare, decide, recent_weeks
from matchcast.tasks.names import MAINTENANCE_QUEUE, RETRAIN_TASK
from matchcast.tasks.retrain_schedule import retrain_schedule

START = date(2024, 1, 1).toordinal()


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """As ``service.retrain`` fits: one BLAS thread (two contend for the cores of a busy machine)."""
    with threadpool_limits(limits=1):
        yield


def synthetic(
    n: int = 3000, days: int = 500, seed: int = 7
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Matches whose outcome follows a known softmax of four features, spread over ``days`` days."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    logits = x @ np.array([[1.2, 0.0, -1.2], [0.4, -0.2, -0.4], [0.0, 0.6, 0.0], [0.0, 0.0, 0.0]]) + [0.4, 0.0, -0.2]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p], dtype=np.int64)
    dates = np.sort(START + rng.integers(0, days, size=n)).astype(np.int64)
    return x, y, dates


GOOD, DEGRADED = Recipe(c=1.0), Recipe(c=1e-6)  # almost no freedom: close to the outcome frequencies


def test_a_better_challenger_is_promoted_and_a_worse_one_is_not() -> None:
    x, y, dates = synthetic()
    better = compare(x, y, dates, challenger=GOOD, champion=DEGRADED, weeks=8)
    assert len(better.weeks) == 8 and better.n > 300
    assert better.challenger_rps < better.champion_rps
    assert better.diff_mean == pytest.approx(better.challenger_rps - better.champion_rps)
    assert better.diff_mean + better.diff_se < 0
    assert decide(better)[0] is True
    worse = compare(x, y, dates, challenger=DEGRADED, champion=GOOD, weeks=8)
    assert worse.diff_mean == pytest.approx(-better.diff_mean) and worse.n == better.n
    promote, reason = decide(worse)
    assert promote is False and "not better" in reason


def test_the_same_recipe_never_promotes_and_staleness_counts() -> None:
    x, y, dates = synthetic()
    same = compare(x, y, dates, challenger=GOOD, champion=GOOD, weeks=4)
    assert same.diff_mean == 0.0 and same.diff_se == 0.0 and same.fits == 4  # one fit per week, shared
    assert decide(same)[0] is False
    stale = compare(x, y, dates, challenger=GOOD, champion=Recipe(c=1.0, lag_days=300), weeks=4)
    assert stale.fits == 8 and stale.diff_mean != 0.0  # the champion's fits lack 300 days of results


def test_each_week_is_forecast_from_earlier_matches_only() -> None:
    x, y, dates = synthetic(n=1200, days=200)
    seen = compare(x, y, dates, GOOD, DEGRADED, weeks=2)
    (first, _), (second, _) = seen.weeks
    week1 = (dates >= first.toordinal()) & (dates < second.toordinal())
    n1 = int(week1.sum())
    # Other outcomes in the last week: no fit saw them, so every forecast stays (scored on the new outcomes).
    other = y.copy()
    other[dates >= second.toordinal()] = (other[dates >= second.toordinal()] + 1) % 3
    changed = compare(x, other, dates, GOOD, DEGRADED, weeks=2)
    for role in ("challenger", "champion"):
        assert np.array_equal(seen.forecasts[role], changed.forecasts[role])
    assert changed.challenger_rps != seen.challenger_rps
    # Other outcomes in the first week: its forecasts stay, the second week's fits see them.
    other = y.copy()
    other[week1] = (other[week1] + 1) % 3
    moved = compare(x, other, dates, GOOD, DEGRADED, weeks=2)
    assert np.array_equal(seen.forecasts["challenger"][:n1], moved.forecasts["challenger"][:n1])
    assert not np.allclose(seen.forecasts["challenger"][n1:], moved.forecasts["challenger"][n1:])


def test_weeks_without_results_are_skipped() -> None:
    dates = np.array([START, START + 1, START + 30, START + 31, START + 60], dtype=np.int64)
    weeks = recent_weeks(dates, 3)
    assert [w[1].toordinal() for w in weeks] == [START + 4, START + 32, START + 60]
    assert all((b - a).days == 6 for a, b in weeks)
    assert len(recent_weeks(dates, 10)) == 3  # only three blocks hold a match
    with pytest.raises(InvalidInput):
        recent_weeks(np.array([], dtype=np.int64), 2)


def test_the_rule_wants_enough_matches_and_a_margin() -> None:
    def comparison(mean: float, se: float, n: int) -> Comparison:
        return Comparison([], n, 0.2 + mean, 0.2, mean, se, 2, np.zeros(n))

    assert decide(comparison(-0.002, 0.001, 200))[0] is True
    assert decide(comparison(-0.0009, 0.001, 200))[0] is False  # better, but by less than one SE
    assert decide(comparison(-0.002, 0.001, 99))[0] is False
    assert decide(comparison(-0.0009, 0.001, 200), GateRule(margin_se=0.5))[0] is True
    assert decide(comparison(-0.002, float("nan"), 200))[0] is False


def test_the_beat_entry() -> None:
    entry = retrain_schedule(Settings(retrain_every_s=3600))["retrain-model"]
    assert entry["task"] == RETRAIN_TASK and entry["options"]["queue"] == MAINTENANCE_QUEUE
    assert entry["schedule"] == 3600 and entry["options"]["expires"] == 3600  # seconds, as beat's other entries
    assert retrain_schedule(Settings())["retrain-model"]["schedule"] == 7 * 24 * 3600
    assert retrain_schedule(Settings(retrain_every_s=0)) == {}
