"""Request schemas: every field bounded, unknown fields refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from matchcast.schemas import (
    FEATURE_NAMES,
    AsyncPredictionRequest,
    InlineFeatures,
    InlinePredictionRequest,
    Probabilities,
)


def valid_features() -> dict[str, float]:
    f = InlineFeatures.model_fields
    return {n: (f[n].metadata[0].ge + f[n].metadata[1].le) / 2 for n in FEATURE_NAMES}  # type: ignore[attr-defined]


def test_every_feature_is_bounded() -> None:
    for name, field in InlineFeatures.model_fields.items():
        kinds = {type(m).__name__ for m in field.metadata}
        assert {"Ge", "Le"} <= kinds, name


def test_valid_request_parses() -> None:
    req = InlinePredictionRequest.model_validate({"features": valid_features(), "home_team": "A"})
    assert req.features.elo_home == 1600


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["features"].update(elo_home=5000),
        lambda b: b["features"].update(rest_days_away=-1),
        lambda b: b["features"].pop("league_draw_rate"),
        lambda b: b["features"].update(surprise=1),
        lambda b: b.update(model_uri="models:/other/1"),
        lambda b: b.update(home_team="x" * 65),
    ],
)
def test_bad_requests_are_refused(mutate: object) -> None:
    body = {"features": valid_features()}
    mutate(body)  # type: ignore[operator]
    with pytest.raises(ValidationError):
        InlinePredictionRequest.model_validate(body)


def test_async_request_bounds() -> None:
    with pytest.raises(ValidationError):
        AsyncPredictionRequest.model_validate({"match_id": 0})
    with pytest.raises(ValidationError):
        AsyncPredictionRequest.model_validate({"match_id": 1, "x": 2})


def test_probabilities_must_sum_to_one() -> None:
    with pytest.raises(ValidationError):
        Probabilities(home=0.5, draw=0.5, away=0.5)
