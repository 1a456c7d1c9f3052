"""The retraining gate: two model recipes compared week by week on the most recent results, and the rule.

A *recipe* is what makes a model from data: the regularisation ``c`` of ``make_pipeline`` and how many days
of the latest results it has not seen (``lag_days``). The champion serving now was trained some days before
the challenger; that staleness is part of what a promotion changes, so the champion's recipe carries it.

``compare`` is a walk-forward over the last ``weeks`` weeks that have results (7-day blocks ending on the latest
result date; blocks without a result are skipped, so an off-season does not empty the window): for each week,
each recipe is fitted (warm-started, as in ``model.evaluate.walk_forward``) on the matches before
``week start - lag_days`` and forecasts that week's matches. Both recipes forecast exactly the same matches,
none of which either fit has seen. The paired RPS difference (challenger minus champion, negative favours the
challenger) and its standard error decide (``decide``); the rule has no constant fitted on recent data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt

from matchcast.errors import InvalidInput
from matchcast.model.predictor import Predictor, fit_before, make_pipeline
from matchcast.model.scoring import FloatArray, mean_se, rps_each

DEFAULT_WEEKS = 8
MAX_WEEKS_BACK = 52  # 7-day blocks looked at, at most, to find ``weeks`` with results


@dataclass(frozen=True)
class Recipe:
    """How a model is made: its regularisation and how many days of the latest results it lacks."""

    c: float
    lag_days: int = 0


@dataclass(frozen=True)
class GateRule:
    """Promote when the challenger's mean paired RPS difference is below zero by ``margin_se`` standard errors,
    on at least ``min_matches`` matches."""

    margin_se: float = 1.0
    min_matches: int = 100


@dataclass(frozen=True)
class Comparison:
    """Both recipes' forecasts of the same matches, scored."""

    weeks: list[tuple[date, date]]
    n: int
    challenger_rps: float
    champion_rps: float
    diff_mean: float
    diff_se: float
    fits: int
    diffs: FloatArray = field(repr=False)
    forecasts: dict[str, FloatArray] = field(repr=False, default_factory=dict)  # role -> (n, 3), as ``diffs``

    @property
    def upper(self) -> float:
        """diff + 1 SE (the bound of the default rule)."""
        return self.diff_mean + self.diff_se


def recent_weeks(dates: npt.NDArray[np.int64], weeks: int) -> list[tuple[date, date]]:
    """The last ``weeks`` 7-day blocks (first day, last day; oldest first) that hold a date of ``dates`` (ordinals),
    counting back from the latest."""
    if weeks < 1:
        raise InvalidInput("the gate needs at least one week")
    if not len(dates):
        raise InvalidInput("no finished match to compare the models on")
    last = int(dates.max())
    found: list[tuple[date, date]] = []
    for back in range(MAX_WEEKS_BACK):
        end = last - 7 * back
        if np.any((dates > end - 7) & (dates <= end)):
            found.append((date.fromordinal(end - 6), date.fromordinal(end)))
            if len(found) == weeks:
                break
    return found[::-1]


def compare(
    x: FloatArray,
    y: npt.NDArray[np.int64],
    dates: npt.NDArray[np.int64],
    challenger: Recipe,
    champion: Recipe,
    weeks: int = DEFAULT_WEEKS,
) -> Comparison:
    """Walk-forward of both recipes over the last ``weeks`` weeks with results (see the module docstring).

    ``dates`` are the matches' date ordinals; ``x``, ``y`` their features and outcomes (0 H, 1 D, 2 A)."""
    blocks = recent_weeks(dates, weeks)
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    pipes = {r: make_pipeline(r.c, warm_start=True) for r in {challenger, champion}}
    cache: dict[tuple[Recipe, int], Predictor] = {}
    probs: dict[str, list[FloatArray]] = {"challenger": [], "champion": []}
    outcomes: list[npt.NDArray[np.int64]] = []
    for first, last in blocks:
        rows = (dates >= first.toordinal()) & (dates <= last.toordinal())
        for role, recipe in (("challenger", challenger), ("champion", champion)):
            cutoff = first - timedelta(days=max(0, recipe.lag_days))
            key = (recipe, cutoff.toordinal())
            if key not in cache:
                cache[key] = fit_before(pipes[recipe], x, y, dates < cutoff.toordinal(), names, cutoff)
            probs[role].append(cache[key].predict_proba(x[rows]))
        outcomes.append(y[rows])
    yy = np.concatenate(outcomes)
    forecasts = {role: np.concatenate(p) for role, p in probs.items()}
    mine, theirs = rps_each(forecasts["challenger"], yy), rps_each(forecasts["champion"], yy)
    d = mine - theirs
    mean, se = mean_se(d)
    return Comparison(blocks, len(d), float(mine.mean()), float(theirs.mean()), mean, se, len(cache), d, forecasts)


def decide(comparison: Comparison, rule: GateRule | None = None) -> tuple[bool, str]:
    """Whether to promote the challenger, and why, by ``rule`` (see ``GateRule``)."""
    rule = rule or GateRule()
    c = comparison
    if c.n < rule.min_matches:
        return False, f"only {c.n} matches in the window (the rule wants {rule.min_matches})"
    bound = c.diff_mean + rule.margin_se * c.diff_se
    stated = f"paired RPS difference {c.diff_mean:+.5f} (SE {c.diff_se:.5f}, n={c.n})"
    if math.isnan(bound) or not bound < 0:
        return False, f"{stated}: not better by {rule.margin_se:g} SE"
    return True, f"{stated}: better by more than {rule.margin_se:g} SE"
