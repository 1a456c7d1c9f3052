"""Walk-forward (rolling-origin) evaluation of matchcast against three baselines on the same matches.

For every match day of the evaluation window each model forecasts that day's matches from matches of earlier
days only:

- **matchcast**: the features of ``compute_features`` (ratings and form move after every match day) and the
  serving model (``make_pipeline`` reduced to a ``Predictor``), refit on every finished match before the day on
  the first day and then every ``refit_days`` days;
- **Dixon-Coles** (penaltyblog): per league, refit every ``dc_refit_days`` days on the league's matches of the
  ``dc_window_days`` before the day, weighted by ``exp(-xi * age in days)``;
- **frequency**: the league's home/draw/away shares over every earlier match (one pseudo-match each);
- **uniform**: one third each.

One module of about 430 lines on purpose: the walk-forward loop, its per-model forecasts and the scoring of
their paired differences read as one procedure, and splitting them would scatter what "the same matches"
means across files.

penaltyblog is an optional dependency (``pip install 'matchcast[eval]'``), imported here only, never on the
serving path.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from matchcast.data.features import MatchLike
from matchcast.errors import InvalidInput
from matchcast.model.predictor import DEFAULT_C, Predictor, make_pipeline
from matchcast.model.scoring import OUTCOMES, FloatArray, all_scores, rps_each

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

    def pooled(self) -> dict[str, float]:
        """The pooled row of the summary as a dict."""
        row = self.summary[(self.summary["league"] == ALL) & (self.summary["season"] == ALL)].iloc[0]
        return {str(k): (float(v) if not isinstance(v, str) else v) for k, v in row.items()}  # type: ignore[misc]


def _result_index(m: MatchLike) -> int:
    hg, ag = m.home_goals or 0, m.away_goals or 0
    return 0 if hg > ag else 1 if hg == ag else 2


class _DixonColes:
    """Per-league penaltyblog Dixon-Coles models, refit weekly on a two-year time-decayed window."""

    def __init__(self, history: Sequence[MatchLike], config: EvalConfig) -> None:
        try:
            import penaltyblog as pb
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InvalidInput("the Dixon-Coles baseline needs penaltyblog: pip install 'matchcast[eval]'") from exc
        self.pb = pb
        self.config = config
        self.by_league: dict[str, list[MatchLike]] = defaultdict(list)
        for m in history:
            self.by_league[m.league].append(m)
        self.fitted: dict[str, tuple[date, Any]] = {}
        self.fits = 0
        self.fallbacks = 0

    def _fit(self, league: str, day: date) -> Any:
        cfg = self.config
        lo = day - timedelta(days=cfg.dc_window_days)
        train = [m for m in self.by_league[league] if lo <= m.date < day]
        if len(train) < cfg.dc_min_matches:
            return None
        weights = self.pb.models.dixon_coles_weights([m.date for m in train], cfg.dc_xi, base_date=day)
        model = self.pb.models.DixonColesGoalModel(
            [m.home_goals for m in train],
            [m.away_goals for m in train],
            [m.home_team for m in train],
            [m.away_team for m in train],
            weights,
        )
        try:
            model.fit()
        except ValueError:  # the optimiser did not converge: keep the previous fit
            return self.fitted.get(league, (day, None))[1]
        self.fits += 1
        return model

    def predict(self, league: str, day: date, pairs: Sequence[tuple[str, str]]) -> FloatArray | None:
        """H/D/A probabilities of ``pairs`` on ``day``; None when no model can be fit yet."""
        last = self.fitted.get(league)
        if last is None or (day - last[0]).days >= self.config.dc_refit_days:
            self.fitted[league] = (day, self._fit(league, day))
        model = self.fitted[league][1]
        if model is None:
            return None
        params = model.get_params()
        teams = set(model.teams)
        # A team absent from the window (promoted) gets the mean strength of the three weakest teams.
        strength = sorted(teams, key=lambda t: params[f"attack_{t}"] - params[f"defence_{t}"])[:3]
        weak_att = float(np.mean([params[f"attack_{t}"] for t in strength]))
        weak_def = float(np.mean([params[f"defence_{t}"] for t in strength]))
        out = np.empty((len(pairs), 3))
        for i, (home, away) in enumerate(pairs):
            if home in teams and away in teams:
                out[i] = model.predict(home, away).home_draw_away
                continue
            self.fallbacks += 1
            ah, dh = (params[f"attack_{home}"], params[f"defence_{home}"]) if home in teams else (weak_att, weak_def)
            aa, da = (params[f"attack_{away}"], params[f"defence_{away}"]) if away in teams else (weak_att, weak_def)
            lam_h = math.exp(params["home_advantage"] + ah + da)
            lam_a = math.exp(aa + dh)
            rho = float(np.clip(params["rho"], max(-1 / lam_h, -1 / lam_a), min(1.0, 1 / (lam_h * lam_a))))
            out[i] = self.pb.models.create_dixon_coles_grid(lam_h, lam_a, rho).home_draw_away
        out = np.clip(out, 1e-9, None)
        result: FloatArray = out / out.sum(axis=1, keepdims=True)
        return result


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
    names = tuple(f"f{i}" for i in range(x_pool.shape[1])) if len(pool) else ()

    dc = _DixonColes(finished, config)
    counts: dict[str, npt.NDArray[np.float64]] = defaultdict(lambda: np.ones(3))  # one pseudo-match each
    hist_i = 0
    probs = {k: np.empty((len(tests), 3)) for k in MODELS}
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
            counts[finished[hist_i].league][_result_index(finished[hist_i])] += 1
            hist_i += 1
        if last_fit is None or (day - last_fit).days >= config.refit_days:
            before = d_pool < day.toordinal()
            if len(np.unique(y_pool[before])) < 3:
                raise InvalidInput(f"too few finished matches before {day} to fit the model")
            pipe.fit(x_pool[before], y_pool[before])
            predictor = Predictor.from_pipeline(pipe, names)
            last_fit, n_refits = day, n_refits + 1
        assert predictor is not None
        x = np.array([features[m.match_id] for m in todays], dtype=np.float64)
        probs["matchcast"][start:end] = predictor.predict_proba(x)
        probs["uniform"][start:end] = 1.0 / 3.0
        for i, m in enumerate(todays, start):
            c = counts[m.league]
            probs["freq"][i] = c / c.sum()
        by_league: dict[str, list[int]] = defaultdict(list)
        for i, m in enumerate(todays, start):
            by_league[m.league].append(i)
        for league, idx in by_league.items():
            p = dc.predict(league, day, [(tests[i].home_team, tests[i].away_team) for i in idx])
            probs["dc"][idx] = probs["freq"][idx] if p is None else p
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
    y = np.array([_result_index(m) for m in tests], dtype=np.int64)
    counts_out = {
        "matches": len(tests),
        "days": len(days),
        "model_refits": n_refits,
        "dc_fits": dc.fits,
        "dc_fallback_predictions": dc.fallbacks,
    }
    return Evaluation(
        period=period,
        config=config,
        predictions=frame,
        summary=summarise(frame, y),
        paired=paired_differences(frame, y),
        calibration=calibration_table(frame, y, config.calibration_bins),
        counts=counts_out,
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
        row["rps_diff_vs_dc"] = float(d.mean())
        row["rps_diff_vs_dc_se"] = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(frame: pd.DataFrame, y: npt.NDArray[np.int64] | None = None) -> dict[str, dict[str, float]]:
    """Mean paired RPS difference of matchcast minus each baseline, with its standard error (pooled)."""
    y = outcomes_of(frame) if y is None else y
    mine = rps_each(_probs(frame, "matchcast"), y)
    out = {}
    for k in MODELS[1:]:
        d = mine - rps_each(_probs(frame, k), y)
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
        out[k] = {"mean": float(d.mean()), "se": se, "n": float(len(d))}
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharey=True)
    names = {"H": "home win", "D": "draw", "A": "away win"}
    for ax, outcome in zip(axes, OUTCOMES, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
        for model, style in (("matchcast", "-o"), ("dc", "--s")):
            t = table[(table["model"] == model) & (table["outcome"] == outcome) & (table["n"] >= min_n)]
            ax.plot(t["mean_forecast"], t["observed"], style, ms=4, label=MODEL_LABELS[model])
        ax.set_title(names[outcome])
        ax.set_xlabel("forecast probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("observed frequency")
    axes[0].legend(loc="upper left")
    fig.suptitle(f"{title} (bins of at least {min_n} matches)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


OUTPUT_FILES = ("predictions.csv", "summary.csv", "summary.json", "calibration.csv", "calibration.png")


def write_outputs(evaluation: Evaluation, out: Path) -> dict[str, Path]:
    """Write the per-match CSV, the summary (CSV and JSON), the calibration table and plot; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in OUTPUT_FILES}
    evaluation.predictions.to_csv(paths["predictions.csv"], index=False, float_format="%.6f")
    evaluation.summary.to_csv(paths["summary.csv"], index=False, float_format="%.6f")
    evaluation.calibration.to_csv(paths["calibration.csv"], index=False, float_format="%.6f")
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
    }
    paths["summary.json"].write_text(json.dumps(doc, indent=2, default=str))
    plot_calibration(evaluation.calibration, paths["calibration.png"], f"Calibration, {evaluation.period.describe()}")
    return paths
