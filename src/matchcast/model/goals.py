"""One scoreline distribution per match, and every goal market read off it (numpy only, vectorised over matches).

The grid of a match is P(home goals = i, away goals = j) for i, j in 0..10:

1. goal rates ``lambda_home``, ``lambda_away`` from a ``GoalsModel`` (a Poisson regression of home and away goals
   on the standardised features, fitted with the 1X2 classifier; or, for a model registered before it existed,
   the features' own time-decayed Poisson expectation ``xmix_home``/``xmix_away``);
2. two independent Poisson margins, the Dixon-Coles low-score correction ``tau(rho)`` on 0-0, 1-0, 0-1, 1-1,
   truncated at 10 goals and normalised;
3. each region (home-win cells, draw cells, away-win cells) rescaled so that its mass is the classifier's
   probability of that outcome: summed over the grid, P(home), P(draw) and P(away) are the served 1X2.

Every market (``market_table``) is a sum of grid cells, so the answers cannot contradict each other or the 1X2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import lgamma
from typing import Any

import numpy as np
import numpy.typing as npt

from matchcast.model.scoring import FloatArray

MAX_GOALS = 10
SIDE = MAX_GOALS + 1
OU_LINES = (0.5, 1.5, 2.5, 3.5, 4.5)
AH_LINES = tuple(k / 2 for k in range(-5, 6))  # -2.5 .. +2.5, the home side's handicap
TOP_SCORES = 5
TOTAL_GOALS_CLASSES = 7  # 0, 1, ..., 5, 6+ (the RPS of total goals)
RATE_BOUNDS = (0.05, 8.0)
RHO_BOUNDS = (-0.3, 0.3)
DEFAULT_GOALS_ALPHA = 1e-3  # L2 of the Poisson regressions; chosen on seasons before 2020/21 (README)

_I, _J = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
HOME_CELLS = (_I > _J).ravel()
DRAW_CELLS = (_I == _J).ravel()
AWAY_CELLS = (_I < _J).ravel()
_REGIONS = np.stack([HOME_CELLS, DRAW_CELLS, AWAY_CELLS], axis=1).astype(np.float64)  # (121, 3)
_TOTAL = (_I + _J).ravel()
_DIFF = (_I - _J).ravel()
# (121, 21) indicator matrices: total goals 0..20, goal difference -10..10 (column d + 10).
_BY_TOTAL = (np.arange(2 * MAX_GOALS + 1)[None, :] == _TOTAL[:, None]).astype(np.float64)
_BY_DIFF = (np.arange(-MAX_GOALS, MAX_GOALS + 1)[None, :] == _DIFF[:, None]).astype(np.float64)
_HOME_GOALS, _AWAY_GOALS = _I.ravel().astype(np.float64), _J.ravel().astype(np.float64)
_BOTH_SCORE = ((_I > 0) & (_J > 0)).ravel().astype(np.float64)
_LOG_FACTORIAL = np.array([lgamma(k + 1) for k in range(SIDE)])
_TINY = 1e-300


def poisson_pmf(rate: FloatArray) -> FloatArray:
    """P(k goals), k = 0..10, for each rate: shape (n, 11)."""
    lam = np.asarray(rate, dtype=np.float64)[:, None]
    k = np.arange(SIDE, dtype=np.float64)[None, :]
    out: FloatArray = np.exp(k * np.log(lam) - lam - _LOG_FACTORIAL[None, :])
    return out


def dixon_coles_grid(lam_home: FloatArray, lam_away: FloatArray, rho: float | FloatArray) -> FloatArray:
    """Independent Poisson grids with the Dixon-Coles low-score correction, normalised: shape (n, 11, 11).

    ``rho`` is clipped per match to where every ``tau`` stays non-negative."""
    lh, la = np.asarray(lam_home, dtype=np.float64), np.asarray(lam_away, dtype=np.float64)
    r = np.clip(np.broadcast_to(np.asarray(rho, dtype=np.float64), lh.shape), -1.0 / np.maximum(lh, la), None)
    r = np.minimum(r, np.minimum(1.0, 1.0 / (lh * la)))
    grid = poisson_pmf(lh)[:, :, None] * poisson_pmf(la)[:, None, :]
    grid[:, 0, 0] *= 1.0 - lh * la * r
    grid[:, 0, 1] *= 1.0 + lh * r
    grid[:, 1, 0] *= 1.0 + la * r
    grid[:, 1, 1] *= 1.0 - r
    np.maximum(grid, 0.0, out=grid)
    grid /= grid.sum(axis=(1, 2), keepdims=True)
    return grid


def region_sums(grid: FloatArray) -> FloatArray:
    """P(home win), P(draw), P(away win) of each grid: shape (n, 3)."""
    out: FloatArray = grid.reshape(len(grid), -1) @ _REGIONS
    return out


def conform(grid: FloatArray, probs: FloatArray) -> FloatArray:
    """Rescale each grid's home-win, draw and away-win cells so that their masses are ``probs`` (n, 3)."""
    factor = np.asarray(probs, dtype=np.float64) / np.maximum(region_sums(grid), _TINY)
    out: FloatArray = (grid.reshape(len(grid), -1) * (factor @ _REGIONS.T)).reshape(grid.shape)
    return out


def served_probabilities(probs: FloatArray) -> FloatArray:
    """The 1X2 exactly as served: home and draw normalised, away the rest (so the three sum to 1)."""
    p = np.asarray(probs, dtype=np.float64)
    total = p.sum(axis=1)
    home, draw = p[:, 0] / total, p[:, 1] / total
    out: FloatArray = np.stack([home, draw, 1.0 - (p[:, 0] + p[:, 1]) / total], axis=1)
    return out


@dataclass(frozen=True)
class GoalsModel:
    """Log goal rates linear in the standardised features (home row, away row), and the Dixon-Coles ``rho``.

    ``coef`` is None for a model registered before goals models existed: the rates are then the features'
    ``xmix_home``/``xmix_away`` (columns ``rate_columns``) and ``rho`` is 0."""

    coef: FloatArray | None
    intercept: FloatArray | None
    rho: float
    rate_columns: tuple[int, int] | None = None

    def rates(self, x: FloatArray, z: FloatArray) -> FloatArray:
        """(lambda_home, lambda_away) per match from raw features ``x`` and standardised ``z``: shape (n, 2)."""
        if self.coef is not None and self.intercept is not None:
            lam = np.exp(np.clip(z @ self.coef.T + self.intercept, -10.0, 10.0))
        elif self.rate_columns is not None:
            lam = x[:, list(self.rate_columns)]
        else:
            raise ValueError("a goals model needs coefficients or rate columns")
        out: FloatArray = np.clip(lam, *RATE_BOUNDS)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (stored with the model in the registry)."""
        if self.coef is None or self.intercept is None:
            raise ValueError("only a fitted goals model is stored")
        return {"format": 1, "coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "rho": self.rho}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], n_features: int) -> GoalsModel:
        """The inverse of ``to_dict``; refuses parameters of another shape or format."""
        if doc.get("format") != 1:
            raise ValueError(f"unknown goals model format {doc.get('format')!r}")
        coef = np.array(doc["coef"], dtype=np.float64)
        intercept = np.array(doc["intercept"], dtype=np.float64)
        if coef.shape != (2, n_features) or intercept.shape != (2,):
            raise ValueError(f"goals model of shape {coef.shape}, expected (2, {n_features})")
        return cls(coef, intercept, float(doc["rho"]))

    @classmethod
    def from_features(cls, feature_names: tuple[str, ...]) -> GoalsModel:
        """The fallback of a model without a fitted goals model: the features' own goal expectations."""
        return cls(None, None, 0.0, (feature_names.index("xmix_home"), feature_names.index("xmix_away")))


def score_grids(goals: GoalsModel, x: FloatArray, z: FloatArray, probs: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The served 1X2 and each match's grid conformed to it: ((n, 3), (n, 11, 11))."""
    served = served_probabilities(probs)
    lam = goals.rates(x, z)
    return served, conform(dixon_coles_grid(lam[:, 0], lam[:, 1], goals.rho), served)


def fit_rho(lam: FloatArray, home_goals: npt.ArrayLike, away_goals: npt.ArrayLike) -> float:
    """The ``rho`` that maximises the likelihood of the observed scores under the conformed grids.

    With each region's mass fixed by the classifier, a score's likelihood is its cell's share of its region,
    and only the four low-score cells move with ``rho``: a search over a grid of ``rho``, vectorised over it."""
    hg, ag = np.asarray(home_goals, dtype=np.int64), np.asarray(away_goals, dtype=np.int64)
    keep = (hg <= MAX_GOALS) & (ag <= MAX_GOALS)
    hg, ag, lh, la = hg[keep], ag[keep], lam[keep, 0], lam[keep, 1]
    ph, pa = poisson_pmf(lh), poisson_pmf(la)
    away_below = np.cumsum(pa, axis=1) - pa  # P(away goals < i)
    home_region = (ph * away_below).sum(axis=1)
    draw_region = (ph * pa).sum(axis=1)
    base = np.where(
        hg > ag, home_region, np.where(hg == ag, draw_region, ph.sum(1) * pa.sum(1) - home_region - draw_region)
    )
    f00, f01, f10, f11 = ph[:, 0] * pa[:, 0], ph[:, 0] * pa[:, 1], ph[:, 1] * pa[:, 0], ph[:, 1] * pa[:, 1]
    m00, m01, m10, m11 = ((hg == h) & (ag == a) for h, a in ((0, 0), (0, 1), (1, 0), (1, 1)))
    in_home, in_draw, in_away = hg > ag, hg == ag, hg < ag
    rhos = np.linspace(RHO_BOUNDS[0], RHO_BOUNDS[1], 31)[:, None]  # steps of 0.02
    r = np.minimum(np.maximum(rhos, -1.0 / np.maximum(lh, la)), np.minimum(1.0, 1.0 / (lh * la)))
    t00, t01, t10, t11 = 1 - lh * la * r, 1 + lh * r, 1 + la * r, 1 - r
    tau = np.where(m00, t00, np.where(m01, t01, np.where(m10, t10, np.where(m11, t11, 1.0))))
    region = base + np.where(
        in_home, (t10 - 1) * f10, np.where(in_draw, (t00 - 1) * f00 + (t11 - 1) * f11, in_away * (t01 - 1) * f01)
    )
    ll = np.log(np.maximum(tau, _TINY)).sum(axis=1) - np.log(np.maximum(region, _TINY)).sum(axis=1)
    return float(rhos[int(np.argmax(ll)), 0])


def fit_goals(z: FloatArray, home_goals: npt.ArrayLike, away_goals: npt.ArrayLike, alpha: float) -> GoalsModel:
    """Poisson regressions of home and away goals on standardised features, then ``rho`` (see ``fit_rho``)."""
    from sklearn.linear_model import PoissonRegressor

    coef, intercept = [], []
    for y in (home_goals, away_goals):
        reg = PoissonRegressor(alpha=alpha, max_iter=1000).fit(z, np.asarray(y, dtype=np.float64))
        coef.append(reg.coef_)
        intercept.append(reg.intercept_)
    model = GoalsModel(np.array(coef, dtype=np.float64), np.array(intercept, dtype=np.float64), 0.0)
    lam = model.rates(z, z)
    return GoalsModel(model.coef, model.intercept, fit_rho(lam, home_goals, away_goals))


# ---- markets: sums of grid cells ----------------------------------------------------------------------------

# Columns of ``market_table``, in order.
MARKET_COLUMNS: tuple[str, ...] = (
    "xg_home",
    "xg_away",
    *(f"{side}_{line}" for line in OU_LINES for side in ("over", "under")),
    "btts_yes",
    "btts_no",
    "dc_home_draw",
    "dc_home_away",
    "dc_draw_away",
    "dnb_home",
    "dnb_away",
    *(f"ah_{outcome}_{line}" for line in AH_LINES for outcome in ("win", "push", "lose")),
)


def market_table(grid: FloatArray) -> FloatArray:
    """Expected goals and every market of each grid as one (n, len(MARKET_COLUMNS)) array."""
    n = len(grid)
    flat = grid.reshape(n, -1)
    by_total = flat @ _BY_TOTAL  # (n, 21)
    by_diff = flat @ _BY_DIFF  # (n, 21): goal difference -10..10
    regions = flat @ _REGIONS
    cols = [flat @ _HOME_GOALS, flat @ _AWAY_GOALS]
    for line in OU_LINES:
        below = int(line)  # totals 0..below are under
        cols += [by_total[:, below + 1 :].sum(axis=1), by_total[:, : below + 1].sum(axis=1)]
    yes = flat @ _BOTH_SCORE
    cols += [yes, flat.sum(axis=1) - yes]
    h, d, a = regions[:, 0], regions[:, 1], regions[:, 2]
    cols += [h + d, h + a, d + a]
    decided = np.maximum(h + a, _TINY)
    cols += [h / decided, a / decided]
    for line in AH_LINES:
        # The home side wins the line when goal difference + line > 0; pushes when it is exactly 0.
        edge = -line  # goal difference at which the line pushes (whole lines only)
        diffs = np.arange(-MAX_GOALS, MAX_GOALS + 1)
        cols += [
            by_diff[:, diffs > edge].sum(axis=1),
            by_diff[:, diffs == edge].sum(axis=1),
            by_diff[:, diffs < edge].sum(axis=1),
        ]
    out: FloatArray = np.stack(cols, axis=1)
    out[:, 2:] = np.clip(out[:, 2:], 0.0, 1.0)
    return out


def top_scores(grid: FloatArray, k: int = TOP_SCORES) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """The ``k`` likeliest cells of each grid (flat indices, likeliest first) and their probabilities."""
    flat = grid.reshape(len(grid), -1)
    part = np.argpartition(-flat, k - 1, axis=1)[:, :k]  # the k largest, unordered: O(121) per match
    order = np.argsort(-np.take_along_axis(flat, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(flat, idx, axis=1)


_N_OU = 2 + 2 * len(OU_LINES)
_AH_AT = _N_OU + 7


def markets_json(grid: FloatArray, *, with_grid: Sequence[bool] | None = None) -> list[dict[str, Any]]:
    """For each grid: ``{"expected_goals": ..., "markets": ..., ["grid": ...]}``, the API's JSON.

    The arithmetic is vectorised over matches; the per-match loop only places numbers into dicts."""
    table = market_table(grid).tolist()
    idx, probs = top_scores(grid)
    home_goals, away_goals = np.divmod(idx, SIDE)
    out = []
    for row, hs, as_, ps in zip(table, home_goals.tolist(), away_goals.tolist(), probs.tolist(), strict=True):
        ah = row[_AH_AT:]
        out.append(
            {
                "expected_goals": {"home": row[0], "away": row[1]},
                "markets": {
                    "over_under": [
                        {"line": line, "over": o, "under": u}
                        for line, o, u in zip(OU_LINES, row[2:_N_OU:2], row[3:_N_OU:2], strict=True)
                    ],
                    "btts": {"yes": row[_N_OU], "no": row[_N_OU + 1]},
                    "double_chance": {
                        "home_draw": row[_N_OU + 2],
                        "home_away": row[_N_OU + 3],
                        "draw_away": row[_N_OU + 4],
                    },
                    "draw_no_bet": {"home": row[_N_OU + 5], "away": row[_N_OU + 6]},
                    "asian_handicap": [
                        {"line": line, "win": w, "push": p, "lose": lo}
                        for line, w, p, lo in zip(AH_LINES, ah[0::3], ah[1::3], ah[2::3], strict=True)
                    ],
                    "top_scores": [
                        {"home_goals": h, "away_goals": a, "probability": p}
                        for h, a, p in zip(hs, as_, ps, strict=True)
                    ],
                },
            }
        )
    for i, wanted in enumerate(with_grid or ()):
        if wanted:
            out[i]["grid"] = grid[i].tolist()
    return out


# ---- the goal-market scores of the evaluation ---------------------------------------------------------------

SUMMARY_COLUMNS = ("p_over_2_5", "p_btts", "p_score", *(f"p_total_{k}" for k in range(TOTAL_GOALS_CLASSES)))


def goal_summary(grid: FloatArray, home_goals: npt.ArrayLike, away_goals: npt.ArrayLike) -> FloatArray:
    """Per match: P(over 2.5), P(both score), P(the observed score), P(total goals = 0..5, 6+): (n, 10).

    A score beyond the grid gets probability 0 (the scores clip it)."""
    n = len(grid)
    flat = grid.reshape(n, -1)
    hg, ag = np.asarray(home_goals, dtype=np.int64), np.asarray(away_goals, dtype=np.int64)
    inside = (hg <= MAX_GOALS) & (ag <= MAX_GOALS)
    cell = np.where(inside, np.minimum(hg, MAX_GOALS) * SIDE + np.minimum(ag, MAX_GOALS), 0)
    p_score = np.where(inside, flat[np.arange(n), cell], 0.0)
    by_total = flat @ _BY_TOTAL
    totals = np.concatenate(
        [by_total[:, : TOTAL_GOALS_CLASSES - 1], by_total[:, TOTAL_GOALS_CLASSES - 1 :].sum(axis=1, keepdims=True)],
        axis=1,
    )
    over = by_total[:, 3:].sum(axis=1)
    out: FloatArray = np.column_stack([over, flat @ _BOTH_SCORE, p_score, totals])
    return out


def total_goals_class(home_goals: npt.ArrayLike, away_goals: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Total goals as a class 0..6 (6 = six or more)."""
    total = np.asarray(home_goals, dtype=np.int64) + np.asarray(away_goals, dtype=np.int64)
    out: npt.NDArray[np.int64] = np.minimum(total, TOTAL_GOALS_CLASSES - 1)
    return out
