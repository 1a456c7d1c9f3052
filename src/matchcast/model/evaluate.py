"""Walk-forward (rolling-origin) evaluation of matchcast against three baselines on the same matches.

For every match day of the evaluation window each model forecasts that day's matches from matches of earlier
days only:

- **matchcast**: the features of ``compute_features`` (ratings and form move after every match day) and the
  serving model (``make_pipeline`` reduced to a ``Predictor``, with its goals model and score grid), refit on
  every finished match before the day on the first day and then every ``refit_days`` days;
- **Dixon-Coles** (penaltyblog): per league, refit every ``dc_refit_days`` days on the league's matches of the
  ``dc_window_days`` before the day, weighted by ``exp(-xi * age in days)``;
- **frequency**: the league's home/draw/away shares over every earlier match (one pseudo-match each);
- **uniform**: one third each.

The goal markets (over/under 2.5, both teams to score, exact score, total goals) are scored on the same matches
from each model's score grid (``evaluate_goals``). penaltyblog is an optional dependency
(``pip install 'matchcast[eval]'``), imported by the evaluation only (``dixon_coles``), never on the serving path.

Just over 400 lines: the walk-forward loop, its 1X2 scores and their outputs read best together; the Dixon-Coles
baseline and the goal-market scoring are modules of their own.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from matchcast.data.features import MatchLike
from matchcast.errors import InvalidInput
from matchcast.model.baselines import LeagueFrequencies
from matchcast.model.dixon_coles import DixonColes
from matchcast.model.evaluate_goals import (
    UNIFORM_SUMMARY,
    ScoreFrequencies,
    goal_calibration_table,
    goal_columns,
    plot_goal_calibration,
    summarise_goals,
)
from matchcast.model.goals import DEFAULT_GOALS_ALPHA, fit_goals, goal_summary
from matchcast.model.predictor import DEFAULT_C, Predictor, fit_before, make_pipeline
from matchcast.model.reliability import plot_reliability
from matchcast.model.scoring import OUTCOMES, FloatArray, all_scores, mean_se, rps_each

MODELS = ("matchcast", "dc", "freq", "uniform")
MODEL_LABELS = {"matchcast": "matchcast", "dc": "Dixon-Coles", "freq": "frequency", "uniform": "uniform"}
METRICS = ("rps", "log_loss", "brier", "accuracy")
MATCH_COLUMNS = ("date", "league", "season", "home_team", "away_team", "home_goals", "away_goals")
ALL = "all"
_SEASON = re.compile(r"^(\d{4})/(\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Progress = Callable[[str, int, int], None]


def prob_columns(model: str) -> tuple[str, str, str]:
    """The per-match CSV columns of a model's probabilities: ``p_home``... for matchcast, ``dc_p_home``... else."""
    prefix = "" if model == "matchcast" else f"{model}_"
    return (f"{prefix}p_home", f"{prefix}p_draw", f"{prefix}p_away")


def parse_bound(text: str) -> str | date:
    """A window bound: a season label (``2020/21``) or a date (``2020-09-12``)."""
    text = text.strip()
    if m := _SEASON.match(text):
        if (int(m.group(1)) + 1) % 100 != int(m.group(2)):
            raise InvalidInput(f"{text!r} is not a season label (like 2020/21)")
        return text
    if _DATE.match(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise InvalidInput(f"{text!r} is neither a season label (like 2020/21) nor a date (YYYY-MM-DD)")


@dataclass(frozen=True)
class Period:
    """Which matches are evaluated: leagues (all when empty) and bounds, each a season label or a date."""

    start: str | date | None = "2020/21"
    end: str | date | None = "2024/25"
    leagues: tuple[str, ...] = ()

    def contains(self, m: MatchLike) -> bool:
        """True when ``m`` is in the window (bounds inclusive)."""
        if self.leagues and m.league not in self.leagues:
            return False
        if isinstance(self.start, date) and m.date < self.start:
            return False
        if isinstance(self.start, str) and m.season < self.start:
            return False
        if isinstance(self.end, date) and m.date > self.end:
            return False
        return not (isinstance(self.end, str) and m.season > self.end)

    def describe(self) -> str:
        """Human-readable window."""
        leagues = ", ".join(self.leagues) if self.leagues else "all leagues"
        return f"{leagues}, {self.start or 'first'} to {self.end or 'last'}"


@dataclass(frozen=True)
class EvalConfig:
    """Knobs of the backtest."""

    refit_days: int = 28
    c: float = DEFAULT_C
    dc_xi: float = 0.0018
    dc_window_days: int = 730
    dc_refit_days: int = 7
    dc_min_matches: int = 60
    goals_alpha: float = DEFAULT_GOALS_ALPHA
    calibration_bins: int = 10


@dataclass
class Evaluation:
    """Everything a walk-forward run produced."""

    period: Period
    config: EvalConfig
    predictions: pd.DataFrame
    summary: pd.DataFrame
    paired: dict[str, dict[str, float]]
    calibration: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    goal_predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # per match, beside ``predictions``
    goals: pd.DataFrame = field(default_factory=pd.DataFrame)
    goal_calibration: pd.DataFrame = field(default_factory=pd.DataFrame)

    def pooled(self) -> dict[str, float]:
        """The pooled row of the summary as a dict."""
        row = self.summary[(self.summary["league"] == ALL) & (self.summary["season"] == ALL)].iloc[0]
        return {str(k): (float(v) if not isinstance(v, str) else v) for k, v in row.items()}  # type: ignore[misc]


def _result_index(m: MatchLike) -> int:
    hg, ag = m.home_goals or 0, m.away_goals or 0
    return 0 if hg > ag else 1 if hg == ag else 2


def walk_forward(
    matches: Sequence[MatchLike],
    features: dict[int, list[float]],
    period: Period | None = None,
    config: EvalConfig | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Backtest every finished match of ``period`` day by day; see the module docstring."""
    period = period or Period()
    config = config or EvalConfig()
    finished = sorted(
        (m for m in matches if m.home_goals is not None and m.away_goals is not None),
        key=lambda m: (m.date, m.match_id),
    )
    tests = [m for m in finished if period.contains(m) and m.match_id in features]
    if not tests:
        raise InvalidInput(f"no finished match to evaluate in {period.describe()}")
    first_season: dict[str, str] = {}
    for m in sorted(matches, key=lambda m: (m.date, m.match_id)):
        first_season.setdefault(m.league, m.season)
    pool = [m for m in finished if m.season != first_season[m.league] and m.match_id in features]
    x_pool = np.array([features[m.match_id] for m in pool], dtype=np.float64)
    y_pool = np.array([_result_index(m) for m in pool], dtype=np.int64)
    d_pool = np.array([m.date.toordinal() for m in pool], dtype=np.int64)
    hg_pool = np.array([m.home_goals or 0 for m in pool], dtype=np.int64)
    ag_pool = np.array([m.away_goals or 0 for m in pool], dtype=np.int64)
    names = tuple(f"f{i}" for i in range(x_pool.shape[1])) if len(pool) else ()

    dc = DixonColes(finished, config)
    counts = LeagueFrequencies()  # the frequency baseline
    scores = ScoreFrequencies()
    hist_i = 0
    probs = {k: np.empty((len(tests), 3)) for k in MODELS}
    goals = {k: np.empty((len(tests), len(UNIFORM_SUMMARY))) for k in MODELS}
    hg_test = np.array([m.home_goals for m in tests], dtype=np.int64)
    ag_test = np.array([m.away_goals for m in tests], dtype=np.int64)
    predictor: Predictor | None = None
    pipe = make_pipeline(config.c, warm_start=True)
    last_fit: date | None = None
    n_refits = 0
    days = sorted({m.date for m in tests})
    start = 0
    for step, day in enumerate(days):
        end = start
        while end < len(tests) and tests[end].date == day:
            end += 1
        todays = tests[start:end]
        while hist_i < len(finished) and finished[hist_i].date < day:
            done = finished[hist_i]
            counts.add(done.league, _result_index(done))
            scores.add(done.league, done.home_goals or 0, done.away_goals or 0)
            hist_i += 1
        if last_fit is None or (day - last_fit).days >= config.refit_days:
            before = d_pool < day.toordinal()
            predictor = fit_before(pipe, x_pool, y_pool, before, names, day)
            z = predictor.standardise(x_pool[before])
            predictor = predictor.with_goals(fit_goals(z, hg_pool[before], ag_pool[before], config.goals_alpha))
            last_fit, n_refits = day, n_refits + 1
        assert predictor is not None
        x = np.array([features[m.match_id] for m in todays], dtype=np.float64)
        probs["matchcast"][start:end], grid = predictor.predict_grid(x)
        goals["matchcast"][start:end] = goal_summary(grid, hg_test[start:end], ag_test[start:end])
        probs["uniform"][start:end] = 1.0 / 3.0
        goals["uniform"][start:end] = UNIFORM_SUMMARY
        for i, m in enumerate(todays, start):
            probs["freq"][i] = counts.probs(m.league)
        league_grids = np.array([scores.grid(m.league) for m in todays])
        goals["freq"][start:end] = goal_summary(league_grids, hg_test[start:end], ag_test[start:end])
        by_league: dict[str, list[int]] = defaultdict(list)
        for i, m in enumerate(todays, start):
            by_league[m.league].append(i)
        for league, idx in by_league.items():
            p = dc.predict(league, day, [(tests[i].home_team, tests[i].away_team) for i in idx])
            probs["dc"][idx] = probs["freq"][idx] if p is None else p[0]
            goals["dc"][idx] = goals["freq"][idx] if p is None else goal_summary(p[1], hg_test[idx], ag_test[idx])
        start = end
        if progress:
            progress("walk-forward", step + 1, len(days))

    frame = pd.DataFrame(
        {
            "date": [m.date.isoformat() for m in tests],
            "league": [m.league for m in tests],
            "season": [m.season for m in tests],
            "home_team": [m.home_team for m in tests],
            "away_team": [m.away_team for m in tests],
            "home_goals": [m.home_goals for m in tests],
            "away_goals": [m.away_goals for m in tests],
        }
    )
    for k in MODELS:
        for j, col in enumerate(prob_columns(k)):
            frame[col] = probs[k][:, j]
    goal_frame = frame[["league", "season", "home_goals", "away_goals"]].copy()
    for k in MODELS:
        for j, col in enumerate(goal_columns(k)):
            goal_frame[col] = goals[k][:, j]
    y = np.array([_result_index(m) for m in tests], dtype=np.int64)
    counts_out = {
        "matches": len(tests),
        "days": len(days),
        "model_refits": n_refits,
        "dc_fits": dc.fits,
        "dc_fallback_predictions": dc.fallbacks,
        "dc_failed_predictions": dc.failures,
    }
    return Evaluation(
        period=period,
        config=config,
        predictions=frame,
        summary=summarise(frame, y),
        paired=paired_differences(frame, y),
        calibration=calibration_table(frame, y, config.calibration_bins),
        counts=counts_out,
        goal_predictions=goal_frame.drop(columns=["league", "season", "home_goals", "away_goals"]),
        goals=summarise_goals(goal_frame, MODELS),
        goal_calibration=goal_calibration_table(goal_frame, config.calibration_bins),
    )


def outcomes_of(frame: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Outcome indices (0 H, 1 D, 2 A) of the per-match frame."""
    hg, ag = frame["home_goals"].to_numpy(), frame["away_goals"].to_numpy()
    return np.where(hg > ag, 0, np.where(hg == ag, 1, 2)).astype(np.int64)


def _probs(frame: pd.DataFrame, model: str) -> FloatArray:
    out: FloatArray = frame[list(prob_columns(model))].to_numpy(dtype=np.float64)
    return out


def summarise(frame: pd.DataFrame, y: npt.NDArray[np.int64] | None = None) -> pd.DataFrame:
    """Scores by league and season, by league, by season and pooled; one column per model and metric."""
    y = outcomes_of(frame) if y is None else y
    leagues = frame["league"].to_numpy()
    seasons = frame["season"].to_numpy()
    groups: list[tuple[str, str, npt.NDArray[np.bool_]]] = []
    for lg in sorted(set(leagues)):
        for s in sorted(set(seasons[leagues == lg])):
            groups.append((lg, s, (leagues == lg) & (seasons == s)))
        groups.append((lg, ALL, leagues == lg))
    for s in sorted(set(seasons)):
        groups.append((ALL, s, seasons == s))
    groups.append((ALL, ALL, np.ones(len(frame), dtype=bool)))
    probs = {k: _probs(frame, k) for k in MODELS}
    rows = []
    for lg, s, mask in groups:
        row: dict[str, Any] = {"league": lg, "season": s, "n": int(mask.sum())}
        for k in MODELS:
            scores = all_scores(probs[k][mask], y[mask])
            row |= {f"{k}_{metric}": scores[metric] for metric in METRICS}
        d = rps_each(probs["matchcast"][mask], y[mask]) - rps_each(probs["dc"][mask], y[mask])
        row["rps_diff_vs_dc"], row["rps_diff_vs_dc_se"] = mean_se(d)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(frame: pd.DataFrame, y: npt.NDArray[np.int64] | None = None) -> dict[str, dict[str, float]]:
    """Mean paired RPS difference of matchcast minus each baseline, with its standard error (pooled)."""
    y = outcomes_of(frame) if y is None else y
    mine = rps_each(_probs(frame, "matchcast"), y)
    out = {}
    for k in MODELS[1:]:
        d = mine - rps_each(_probs(frame, k), y)
        mean, se = mean_se(d)
        out[k] = {"mean": mean, "se": se, "n": float(len(d))}
    return out


def calibration_table(frame: pd.DataFrame, y: npt.NDArray[np.int64] | None = None, bins: int = 10) -> pd.DataFrame:
    """Reliability of matchcast and Dixon-Coles: per outcome and probability bin, mean forecast vs frequency."""
    y = outcomes_of(frame) if y is None else y
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for model in ("matchcast", "dc"):
        p = _probs(frame, model)
        for j, outcome in enumerate(OUTCOMES):
            b = np.clip(np.digitize(p[:, j], edges[1:-1]), 0, bins - 1)
            for k in range(bins):
                mask = b == k
                if not mask.any():
                    continue
                rows.append(
                    {
                        "model": model,
                        "outcome": outcome,
                        "bin_low": float(edges[k]),
                        "bin_high": float(edges[k + 1]),
                        "n": int(mask.sum()),
                        "mean_forecast": float(p[mask, j].mean()),
                        "observed": float((y[mask] == j).mean()),
                    }
                )
    return pd.DataFrame(rows)


def plot_calibration(table: pd.DataFrame, path: Path, title: str, min_n: int = 20) -> None:
    """Reliability diagram, one panel per outcome (matplotlib, Agg backend); bins under ``min_n`` left out."""
    plot_reliability(table, path, title, "outcome", {"H": "home win", "D": "draw", "A": "away win"}, min_n)


OUTPUT_FILES = (
    "predictions.csv",
    "summary.csv",
    "summary.json",
    "calibration.csv",
    "calibration.png",
    "goals_summary.csv",
    "goals_calibration.csv",
    "goals_calibration.png",
)


def write_outputs(evaluation: Evaluation, out: Path) -> dict[str, Path]:
    """Write the per-match CSV, the summary (CSV and JSON), the calibration table and plot; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in OUTPUT_FILES}
    per_match = pd.concat([evaluation.predictions, evaluation.goal_predictions], axis=1)
    per_match.to_csv(paths["predictions.csv"], index=False, float_format="%.6f")
    evaluation.summary.to_csv(paths["summary.csv"], index=False, float_format="%.6f")
    evaluation.calibration.to_csv(paths["calibration.csv"], index=False, float_format="%.6f")
    evaluation.goals.to_csv(paths["goals_summary.csv"], index=False, float_format="%.6f")
    evaluation.goal_calibration.to_csv(paths["goals_calibration.csv"], index=False, float_format="%.6f")
    doc = {
        "period": {
            "start": str(evaluation.period.start) if evaluation.period.start else None,
            "end": str(evaluation.period.end) if evaluation.period.end else None,
            "leagues": list(evaluation.period.leagues),
        },
        "config": asdict(evaluation.config),
        "counts": evaluation.counts,
        "paired_rps_difference": evaluation.paired,
        "summary": evaluation.summary.to_dict(orient="records"),
        "goals_summary": evaluation.goals.to_dict(orient="records"),
    }
    paths["summary.json"].write_text(json.dumps(doc, indent=2, default=str))
    plot_calibration(evaluation.calibration, paths["calibration.png"], f"Calibration, {evaluation.period.describe()}")
    plot_goal_calibration(
        evaluation.goal_calibration, paths["goals_calibration.png"], f"Goal markets, {evaluation.period.describe()}"
    )
    return paths
