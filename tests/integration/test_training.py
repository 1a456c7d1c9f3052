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
