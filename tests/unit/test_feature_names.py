"""One list of feature names: the schema, the feature computation, the trained model and the UI agree on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matchcast.data.features import FEATURE_VERSION, FeatureState, compute_features, feature_row
from matchcast.schemas import FEATURE_NAMES, InlineFeatures
from matchcast.service.bootstrap import train_model
from matchcast.service.wiring import registry_for
from matchcast.ui.pages import TYPICAL
from tests.conftest import base_settings, ingest_subset
from tests.unit.test_features import season_rows


def test_the_schema_fields_are_the_feature_names_in_order() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 63
    assert tuple(InlineFeatures.model_fields) == FEATURE_NAMES
    # The API's OpenAPI document (which the UI's what-if form is built from) lists them in the same order.
    assert tuple(InlineFeatures.model_json_schema()["properties"]) == FEATURE_NAMES


def test_the_feature_computation_names_every_feature_once() -> None:
    rows = season_rows()
    state = FeatureState()
    for m in rows[:100]:
        state.update(m)
    named = state.named_features(rows[100])
    assert set(named) == set(FEATURE_NAMES)
    assert state.features(rows[100]) == [named[n] for n in FEATURE_NAMES]
    assert all(len(row) == len(FEATURE_NAMES) for row in compute_features(rows).values())


def test_a_row_is_ordered_by_the_names_and_needs_every_name_and_no_other() -> None:
    values = {n: float(i) for i, n in reversed(list(enumerate(FEATURE_NAMES)))}
    assert feature_row(values) == [float(i) for i in range(len(FEATURE_NAMES))]
    with pytest.raises(ValueError, match=r"missing \['no_crowd'\], unknown \[\]"):
        feature_row({n: v for n, v in values.items() if n != "no_crowd"})
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['elo_diff'\]"):
        feature_row(values | {"elo_diff": 0.0})


def test_the_trained_model_expects_the_feature_names_in_order(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    ingest_subset(settings, leagues=("premier-league",), first_season=22)
    train_model(settings)
    registry = registry_for(settings)
    info = registry.info("champion")
    assert json.loads(info.tags["feature_names"]) == list(FEATURE_NAMES)
    assert info.tags["feature_version"] == FEATURE_VERSION
    model = registry.load("champion")
    assert model.predictor.feature_names == FEATURE_NAMES
    assert model.predictor.coef.shape == (3, len(FEATURE_NAMES))


def test_the_uis_typical_values_are_of_features() -> None:
    # The UI may import nothing of matchcast but itself, so it keeps its own starting values by name; the other
    # features start at the midpoint of their bounds. A renamed feature must not leave a typical value behind.
    assert set(TYPICAL) <= set(FEATURE_NAMES)
    assert all(isinstance(v, float) for v in TYPICAL.values())
