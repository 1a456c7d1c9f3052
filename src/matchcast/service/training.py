"""Training from the match store: features, a held-out season, fit, log, register."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np

from matchcast.data.features import FEATURE_VERSION, compute_features
from matchcast.data.store import MatchStore
from matchcast.errors import InvalidInput
from matchcast.model.goals import DEFAULT_GOALS_ALPHA, fit_goals, goal_summary
from matchcast.model.predictor import DEFAULT_C, Predictor, make_pipeline
from matchcast.model.registry import ModelRegistry, code_version
from matchcast.model.scoring import all_scores, outcome_index
from matchcast.schemas import FEATURE_NAMES

log = logging.getLogger(__name__)
MIN_SEASON_MATCHES = 100


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` registered."""

    version: str
    held_out_season: str
    metrics: dict[str, float]
    n_train: int
    window: tuple[date, date]
    alias_set: str | None


@dataclass
class Dataset:
    """Finished matches with features, ready to fit."""

    x: np.ndarray
    y: np.ndarray
    seasons: np.ndarray
    leagues: np.ndarray
    dates: np.ndarray
    home_goals: np.ndarray
    away_goals: np.ndarray


def build_dataset(
    store: MatchStore, since: date | None = None, stored: dict[int, list[float]] | None = None
) -> Dataset:
    """Features and outcomes of every finished match after each league's first season (from ``since`` on, when
    given: the features still see every earlier match).

    ``stored`` (feature rows of this ``FEATURE_VERSION`` read from the store, which every ingest refreshes with
    the same ``compute_features``) is used when it covers every match; otherwise the features are computed."""
    matches = store.all_matches()
    covered = stored is not None and all(m.match_id in stored for m in matches)
    feats = stored if stored is not None and covered else compute_features(matches)
    first_season: dict[str, str] = {}
    for m in matches:
        first_season.setdefault(m.league, m.season)
    done = [
        m
        for m in matches
        if m.result is not None and m.season != first_season[m.league] and (since is None or m.date >= since)
    ]
    if not done:
        raise InvalidInput("the store has no finished matches to train on; run `matchcast ingest` first")
    return Dataset(
        x=np.array([feats[m.match_id] for m in done], dtype=np.float64),
        y=outcome_index([m.result for m in done if m.result]),
        seasons=np.array([m.season for m in done]),
        leagues=np.array([m.league for m in done]),
        dates=np.array([m.date for m in done]),
        home_goals=np.array([m.home_goals or 0 for m in done], dtype=np.int64),
        away_goals=np.array([m.away_goals or 0 for m in done], dtype=np.int64),
    )


def _held_out_season(store: MatchStore, ds: Dataset) -> str:
    """The most recent season with no upcoming match left and enough finished ones."""
    upcoming = {m.season for m in store.all_matches() if m.result is None}
    seasons, counts = np.unique(ds.seasons, return_counts=True)
    complete = [s for s, c in zip(seasons, counts, strict=True) if s not in upcoming and c >= MIN_SEASON_MATCHES]
    if len(complete) < 2:
        raise InvalidInput("training needs at least two complete seasons of results")
    return str(max(complete))


def _with_goals(predictor: Predictor, ds: Dataset, rows: np.ndarray) -> Predictor:
    """The predictor with a goals model fitted on ``rows`` (on the features as the classifier scales them)."""
    z = predictor.standardise(ds.x[rows])
    return predictor.with_goals(fit_goals(z, ds.home_goals[rows], ds.away_goals[rows], DEFAULT_GOALS_ALPHA))


def _goal_metrics(grid: np.ndarray, home_goals: np.ndarray, away_goals: np.ndarray) -> dict[str, float]:
    """Held-out log losses of over/under 2.5, both teams to score and the exact score."""
    s = goal_summary(grid, home_goals, away_goals)
    over, btts = home_goals + away_goals > 2, (home_goals > 0) & (away_goals > 0)

    def binary(p: np.ndarray, y: np.ndarray) -> float:
        p = np.clip(p, 1e-15, 1 - 1e-15)
        return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))

    return {
        "heldout_ou25_log_loss": binary(s[:, 0], over),
        "heldout_btts_log_loss": binary(s[:, 1], btts),
        "heldout_score_log_loss": float(-np.mean(np.log(np.clip(s[:, 2], 1e-15, 1.0)))),
    }


TRAIN_STEPS = ("building the dataset", "fitting before the held-out season", "refitting on all results", "registering")


def train(
    store: MatchStore,
    registry: ModelRegistry,
    *,
    c: float = DEFAULT_C,
    alias: str | None = "champion",
    progress: Callable[[str, int, int], None] | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Fit on seasons before the held-out one, score it, refit on all results, register, set ``alias``.

    ``progress(step, done, total)`` hears of each of ``TRAIN_STEPS`` as it starts, and of the end. ``dataset``
    (``build_dataset``'s, when the caller has it already) saves computing the features again.
    """

    def step(n: int) -> None:
        if progress:
            progress(TRAIN_STEPS[n] if n < len(TRAIN_STEPS) else "done", n, len(TRAIN_STEPS))

    step(0)
    ds = dataset if dataset is not None else build_dataset(store)
    held = _held_out_season(store, ds)
    before, test = ds.seasons < held, ds.seasons == held
    step(1)
    pipe = make_pipeline(c).fit(ds.x[before], ds.y[before])
    predictor = _with_goals(Predictor.from_pipeline(pipe, FEATURE_NAMES), ds, before)
    probs, grid = predictor.predict_grid(ds.x[test])
    scores = all_scores(probs, ds.y[test])
    uniform = all_scores(np.full((int(test.sum()), 3), 1 / 3), ds.y[test])
    metrics = {f"heldout_{k}": v for k, v in scores.items()} | {"heldout_uniform_rps": uniform["rps"]}
    metrics |= _goal_metrics(grid, ds.home_goals[test], ds.away_goals[test])
    step(2)
    final = make_pipeline(c).fit(ds.x, ds.y)
    goals = _with_goals(Predictor.from_pipeline(final, FEATURE_NAMES), ds, np.ones(len(ds.y), dtype=bool)).goals
    assert goals is not None
    window = (min(ds.dates), max(ds.dates))
    tags = {
        "feature_names": json.dumps(list(FEATURE_NAMES)),
        "feature_version": FEATURE_VERSION,
        "code_version": code_version(),
        "training_window_start": window[0].isoformat(),
        "training_window_end": window[1].isoformat(),
        "held_out_season": held,
    }
    params = {
        "model": "multinomial_logistic_regression",
        "C": c,
        "n_train": len(ds.y),
        "n_features": len(FEATURE_NAMES),
        "goals_model": "poisson_regression_dixon_coles",
        "goals_alpha": DEFAULT_GOALS_ALPHA,
        "goals_rho": goals.rho,
        "feature_version": FEATURE_VERSION,
        "held_out_season": held,
        "training_window_start": window[0].isoformat(),
        "training_window_end": window[1].isoformat(),
    }
    step(3)
    version = registry.log_and_register(
        final,
        params=params,
        metrics=metrics,
        tags=tags,
        artifacts={"feature_names.json": list(FEATURE_NAMES)},
        metadata={"goals_model": goals.to_dict()},
    )
    if alias:
        registry.set_alias(alias, version)
    log.info("trained version %s: held-out %s RPS %.4f (uniform %.4f)", version, held, scores["rps"], uniform["rps"])
    step(len(TRAIN_STEPS))
    return TrainResult(version, held, metrics, len(ds.y), window, alias)
