"""Training registers a version in a real MLflow registry and points the alias at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchcast.config import Settings
from matchcast.model.registry import ModelRegistry
from matchcast.service.bootstrap import prepare, train_model
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
    assert reg.version_of("champion") == "2"
    info = reg.info("champion")
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
