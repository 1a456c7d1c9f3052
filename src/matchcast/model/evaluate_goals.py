"""The goal markets in the walk-forward evaluation: per-match columns, scores, paired differences, calibration.

Each model's forecast of a match is reduced to ``goals.SUMMARY_COLUMNS`` (P(over 2.5), P(both score), P(the
observed score), P(total goals = 0..5, 6+)), stored in the per-match frame with the model's prefix (none for
matchcast, ``dc_``, ``freq_``, ``uniform_``), and scored: over/under 2.5 and BTTS by log loss and Brier score,
the exact score by log loss, total goals by RPS over 0..6+. Baselines: Dixon-Coles' own grid, the league's
score frequencies before the day (one pseudo-match spread over the grid), and uniform (one half for a yes/no
market, 1/121 per score, 1/7 per total-goals class).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from matchcast.model.goals import SIDE, SUMMARY_COLUMNS, TOTAL_GOALS_CLASSES, total_goals_class
from matchcast.model.reliability import plot_reliability
from matchcast.model.scoring import FloatArray, mean_se

GOAL_METRICS = ("ou25_log_loss", "ou25_brier", "btts_log_loss", "btts_brier", "score_log_loss", "total_rps")
PAIRED_GOAL_METRICS = ("ou25_log_loss", "btts_log_loss", "score_log_loss", "total_rps")
GOAL_MARKETS = {"p_over_2_5": "over 2.5 goals", "p_btts": "both teams score"}
UNIFORM_SUMMARY = np.array([0.5, 0.5, 1.0 / SIDE**2, *([1.0 / TOTAL_GOALS_CLASSES] * TOTAL_GOALS_CLASSES)])
_EPS = 1e-15


def goal_columns(model: str) -> list[str]:
    """The per-match CSV columns of a model's goal summary (``p_over_2_5``... or ``dc_p_over_2_5``...)."""
    prefix = "" if model == "matchcast" else f"{model}_"
    return [f"{prefix}{c}" for c in SUMMARY_COLUMNS]


class ScoreFrequencies:
    """Each league's score frequencies over every earlier match, one pseudo-match spread over the grid."""

    def __init__(self) -> None:
        self.counts: dict[str, FloatArray] = defaultdict(lambda: np.full((SIDE, SIDE), 1.0 / SIDE**2))

    def add(self, league: str, home_goals: int, away_goals: int) -> None:
        """Count one finished match (scores beyond the grid in its last row or column)."""
        self.counts[league][min(home_goals, SIDE - 1), min(away_goals, SIDE - 1)] += 1.0

    def grid(self, league: str) -> FloatArray:
        """The league's normalised score grid (11, 11)."""
        c = self.counts[league]
        out: FloatArray = c / c.sum()
        return out


def each_score(summary: FloatArray, home_goals: npt.ArrayLike, away_goals: npt.ArrayLike) -> dict[str, FloatArray]:
    """Per match: every metric of ``GOAL_METRICS`` (log losses, Brier scores, RPS) of one model's summaries."""
    hg, ag = np.asarray(home_goals, dtype=np.int64), np.asarray(away_goals, dtype=np.int64)
    over, btts = (hg + ag > 2).astype(np.float64), ((hg > 0) & (ag > 0)).astype(np.float64)
    p_over, p_btts = np.clip(summary[:, 0], _EPS, 1 - _EPS), np.clip(summary[:, 1], _EPS, 1 - _EPS)
    cum_p = np.cumsum(summary[:, 3:], axis=1)[:, :-1]
    cum_o = (np.arange(TOTAL_GOALS_CLASSES - 1)[None, :] >= total_goals_class(hg, ag)[:, None]).astype(np.float64)
    return {
        "ou25_log_loss": -(over * np.log(p_over) + (1 - over) * np.log(1 - p_over)),
        "ou25_brier": (summary[:, 0] - over) ** 2,
        "btts_log_loss": -(btts * np.log(p_btts) + (1 - btts) * np.log(1 - p_btts)),
        "btts_brier": (summary[:, 1] - btts) ** 2,
        "score_log_loss": -np.log(np.clip(summary[:, 2], _EPS, 1.0)),
        "total_rps": ((cum_p - cum_o) ** 2).sum(axis=1) / (TOTAL_GOALS_CLASSES - 1),
    }


def summarise_goals(frame: pd.DataFrame, models: tuple[str, ...]) -> pd.DataFrame:
    """Goal-market scores by league and pooled (and by season, pooled), with paired differences against DC."""
    hg, ag = frame["home_goals"].to_numpy(), frame["away_goals"].to_numpy()
    scores = {k: each_score(frame[goal_columns(k)].to_numpy(dtype=np.float64), hg, ag) for k in models}
    leagues, seasons = frame["league"].to_numpy(), frame["season"].to_numpy()
    groups = [(lg, "all", leagues == lg) for lg in sorted(set(leagues))]
    groups += [("all", s, seasons == s) for s in sorted(set(seasons))]
    groups.append(("all", "all", np.ones(len(frame), dtype=bool)))
    rows = []
    for lg, s, mask in groups:
        row: dict[str, Any] = {"league": lg, "season": s, "n": int(mask.sum())}
        for k in models:
            row |= {f"{k}_{metric}": float(scores[k][metric][mask].mean()) for metric in GOAL_METRICS}
        for metric in PAIRED_GOAL_METRICS:
            d = scores["matchcast"][metric][mask] - scores["dc"][metric][mask]
            row[f"{metric}_diff_vs_dc"], row[f"{metric}_diff_vs_dc_se"] = mean_se(d)
        rows.append(row)
    return pd.DataFrame(rows)


def goal_calibration_table(frame: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Reliability of matchcast and Dixon-Coles on over 2.5 and both teams to score, per probability bin."""
    hg, ag = frame["home_goals"].to_numpy(), frame["away_goals"].to_numpy()
    happened = {"p_over_2_5": hg + ag > 2, "p_btts": (hg > 0) & (ag > 0)}
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for model, prefix in (("matchcast", ""), ("dc", "dc_")):
        for market, y in happened.items():
            p = frame[f"{prefix}{market}"].to_numpy(dtype=np.float64)
            b = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
            for k in range(bins):
                mask = b == k
                if mask.any():
                    rows.append(
                        {
                            "model": model,
                            "market": market,
                            "bin_low": float(edges[k]),
                            "bin_high": float(edges[k + 1]),
                            "n": int(mask.sum()),
                            "mean_forecast": float(p[mask].mean()),
                            "observed": float(y[mask].mean()),
                        }
                    )
    return pd.DataFrame(rows)


def plot_goal_calibration(table: pd.DataFrame, path: Path, title: str, min_n: int = 20) -> None:
    """Reliability diagram of over 2.5 and both teams to score; bins under ``min_n`` left out."""
    plot_reliability(table, path, title, "market", GOAL_MARKETS, min_n)
