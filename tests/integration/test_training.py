"""Training registers a version in a real MLflow registry and points the alias at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchcast.config import Settings
from matchcast.errors import Conflict, ModelNotFound
from matchcast.model.registry import ModelRegistry
from matchcast.service.bootstrap import prepare, train_model
from matchcast.service.lifecycle import promote
from matchcast.service.prediction import PredictionService
from matchcast.service.wiring import registry_for, store_for
from tests.conftest import ingest_subset

pytestmark = pytest.mark.integration


def test_train_registers_and_aliases(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    ingest_subset(settings, leagues=("la-liga",), first_season=18)
    first = train_model(settings)
    second = train_model(settings)
    reg: ModelRegistry = registry_for(settings)
    assert (first.version, second.version) == ("1", "2")
    # The first model serves at once; a later one waits as challenger until promoted.
    assert (reg.version_of("champion"), reg.version_of("challenger")) == ("1", "2")
    assert (first.alias_set, second.alias_set) == ("champion", "challenger")
    promote(settings, force=True)
    assert (reg.version_of("champion"), reg.version_of("challenger")) == ("2", None)
    info = reg.info("champion")
    assert info.tags["promotion_forced"] == "True" and info.tags["promoted_from"] == "1"
    assert info.tags["held_out_season"] == "2024/25" and info.tags["feature_version"].startswith("v")
    assert info.params["model"] == "multinomial_logistic_regression"
    assert 0.15 < info.metrics["heldout_rps"] < info.metrics["heldout_uniform_rps"]
    svc = PredictionService(store_for(settings), reg, "champion")
    assert svc.model.version == "2"


def test_prepare_only_does_what_is_missing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    ingest_subset(settings, leagues=("bundesliga",), first_season=19)
    ingested, trained = prepare(settings)
    assert ingested is None and trained is not None  # the store was not empty; the registry was
    assert prepare(settings) == (None, None)


def test_promotion_needs_a_better_candidate_on_the_same_window(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    ingest_subset(settings, leagues=("serie-a",), first_season=19)
    with pytest.raises(ModelNotFound):
        promote(settings)
    train_model(settings)  # champion, C=0.05
    reg = registry_for(settings)
    from matchcast.service.training import train

    # A deliberately worse candidate: almost no regularisation freedom.
    worse = train(store_for(settings), reg, c=1e-5, alias="challenger")
    with pytest.raises(Conflict, match="does not beat"):
        promote(settings)
    assert reg.version_of("champion") == "1"
    with pytest.raises(Conflict, match="already"):
        promote(settings, "1")
    done = promote(settings, worse.version, force=True)
    assert (done.version, done.previous, done.forced) == (worse.version, "1", True)
    assert reg.version_of("champion") == worse.version


def test_the_goals_model_travels_in_the_registered_model(tmp_path: Path) -> None:
    import mlflow.models
    import numpy as np

    from matchcast.model.goals import region_sums
    from matchcast.model.predictor import Predictor, make_pipeline
    from matchcast.schemas import FEATURE_NAMES
    from matchcast.service.training import build_dataset

    settings = Settings(home=tmp_path)
    ingest_subset(settings, leagues=("la-liga",), first_season=18)
    train_model(settings)
    reg = registry_for(settings)
    info = reg.info("champion")
    assert info.params["goals_model"] == "poisson_regression_dixon_coles"
    assert -0.3 <= float(info.params["goals_rho"]) <= 0.3
    # Held-out goal markets are scored (one league's few seasons: near a coin on both teams to score).
    assert 0.5 < info.metrics["heldout_btts_log_loss"] < 0.75 and 0.5 < info.metrics["heldout_ou25_log_loss"] < 0.75
    assert info.metrics["heldout_score_log_loss"] < np.log(121)
    stored = mlflow.models.get_model_info(f"models:/{reg.name}/{info.version}").metadata["goals_model"]
    svc = PredictionService(store_for(settings), reg, "champion")
    goals = svc.model.predictor.goals
    assert goals is not None and goals.coef is not None and np.array_equal(goals.coef, np.array(stored["coef"]))
    ds = build_dataset(store_for(settings))
    probs, grid = svc.model.predictor.predict_grid(ds.x[-380:])
    assert np.abs(region_sums(grid) - probs).max() < 1e-12
    lam = goals.rates(ds.x[-380:], svc.model.predictor.standardise(ds.x[-380:]))
    assert 1.0 < lam[:, 0].mean() < 2.0 and 0.7 < lam[:, 1].mean() < 1.6  # home scores more
    # A version registered the old way (no goals model in the MLflow model) still serves, from the features.
    pipe = make_pipeline().fit(ds.x, ds.y)
    tags = {"feature_names": __import__("json").dumps(list(FEATURE_NAMES)), "feature_version": "old"}
    old = reg.log_and_register(pipe, params={}, metrics={}, tags=tags)
    reg.set_alias("old", old)
    legacy = PredictionService(store_for(settings), reg, "old")
    assert legacy.model.predictor.goals is None
    assert isinstance(legacy.model.predictor, Predictor)
    entry = legacy.predict_each([{"match_id": int(m.match_id)} for m in store_for(settings).all_matches()[-3:]])
    assert all(e["prediction"]["markets"]["btts"]["yes"] > 0 for e in entry)
