"""The worker's task entry point validates payloads as strictly as the API, and loads only the configured model."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matchcast.data.store import MatchStore
from matchcast.errors import InvalidInput, MatchNotFound
from matchcast.model.predictor import Predictor
from matchcast.model.registry import LoadedModel
from matchcast.schemas import FEATURE_NAMES, AsyncPredictionRequest, InlineFeatures, InlinePredictionRequest
from matchcast.service.prediction import PredictionService


class FakeRegistry:
    """Records what is loaded; serves a neutral model."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load(self, alias: str) -> LoadedModel:
        self.loaded.append(alias)
        n = len(FEATURE_NAMES)
        predictor = Predictor(np.zeros(n), np.ones(n), np.zeros((3, n)), np.zeros(3), FEATURE_NAMES)
        return LoadedModel("matchcast", "7", alias, None, predictor, "v-test")


def features() -> dict[str, float]:
    f = InlineFeatures.model_fields
    return {n: (f[n].metadata[0].ge + f[n].metadata[1].le) / 2 for n in FEATURE_NAMES}  # type: ignore[attr-defined]


@pytest.fixture
def service(tmp_path: Path) -> PredictionService:
    return PredictionService(MatchStore(f"sqlite:///{tmp_path / 's.db'}"), FakeRegistry(), "champion")  # type: ignore[arg-type]


def test_valid_payloads(service: PredictionService) -> None:
    out = service.predict({"features": features(), "home_team": "A", "date": "2026-06-01"})
    assert out["probabilities"]["home"] == pytest.approx(1 / 3) and out["model_version"] == "7"
    assert service.predict({"features": {**features(), "elo_home": 1500}})["home_team"] is None  # ints are numbers
    with pytest.raises(MatchNotFound):
        service.predict({"match_id": 123})
    with pytest.raises(MatchNotFound):  # 123.0 is a JSON integer (JSON Schema, and the API, agree)
        service.predict({"match_id": 123.0})


@pytest.mark.parametrize(
    "payload",
    [
        {"match_id": True},
        {"match_id": False},
        {"match_id": 0},
        {"match_id": -5},
        {"match_id": 2**31},
        {"match_id": 10**100},
        {"match_id": 1.5},
        {"match_id": "1"},
        {"match_id": None},
        {"match_id": [1]},
        {"match_id": 1, "extra": 2},
        {"match_id": 1, "features": {}},
        {"match_id": 1, "model_uri": "models:/evil/1"},
        {"features": features(), "model_uri": "runs:/abc/model"},
        {"features": features(), "model_version": "3"},
        {"features": features(), "alias": "challenger"},
        {"features": {**features(), "elo_home": True}},
        {"features": {**features(), "league_draw_rate": "0.3"}},
        {"features": {**features(), "elo_home": float("nan")}},
        {"features": {**features(), "elo_home": float("inf")}},
        {"features": {**features(), "elo_home": 1e308}},
        {"features": {**features(), "surprise": 1.0}},
        {"features": {k: v for k, v in features().items() if k != "elo_home"}},
        {"features": features(), "home_team": "x" * 1_000_000},
        {"features": features(), "home_team": ""},
        {"features": features(), "date": "not a date"},
        {"features": "1,2,3"},
        {},
        {"__class__": "os.system", "args": ["touch /tmp/pwned"]},
    ],
)
def test_odd_payloads_are_refused(service: PredictionService, payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as err:
        service.predict(payload)
    assert len(err.value.detail) < 2000  # the error names the problem without echoing huge inputs
    assert "x" * 100 not in err.value.detail


@pytest.mark.parametrize("payload", [None, [], "match_id", 5, [{"match_id": 1}]])
def test_non_objects_are_refused(service: PredictionService, payload: Any) -> None:
    with pytest.raises(InvalidInput):
        service.predict(payload)


def test_api_schemas_refuse_what_the_worker_refuses() -> None:
    for schema, body in (
        (AsyncPredictionRequest, {"match_id": True}),
        (AsyncPredictionRequest, {"match_id": 1, "model_uri": "x"}),
        (InlinePredictionRequest, {"features": {**features(), "elo_away": False}}),
        (InlinePredictionRequest, {"features": features(), "model_name": "other"}),
    ):
        with pytest.raises(ValueError):
            schema.model_validate(body)


def test_only_the_configured_alias_is_ever_loaded(tmp_path: Path) -> None:
    registry = FakeRegistry()
    service = PredictionService(MatchStore(f"sqlite:///{tmp_path / 's.db'}"), registry, "champion")  # type: ignore[arg-type]
    for payload in (
        {"features": features()},
        {"features": features(), "alias": "challenger"},
        {"features": features(), "model_uri": "models:/other@x"},
    ):
        with contextlib.suppress(InvalidInput):
            service.predict(payload)
    assert registry.loaded == ["champion"]  # once, at start, by the configured alias; no request chooses
    # No request schema has a field that could name a model.
    for schema in (AsyncPredictionRequest, InlinePredictionRequest):
        assert not {f for f in schema.model_fields if "model" in f or "uri" in f or "alias" in f}
        assert schema.model_config.get("extra") == "forbid"


def test_the_registry_name_comes_from_settings_only(tmp_path: Path) -> None:
    from matchcast.config import Settings
    from matchcast.service.wiring import registry_for

    assert registry_for(Settings(home=tmp_path, model_name="custom-name")).name == "custom-name"


def test_a_group_is_answered_in_order_and_one_bad_request_spoils_nothing(service: PredictionService) -> None:
    inline = {"features": features(), "home_team": "A", "date": "2026-06-01"}
    out = service.predict_each([inline, {"match_id": 123}, {"match_id": "x"}, "junk", inline, {"match_id": 123}])
    assert len(out) == 6
    assert out[0]["prediction"]["home_team"] == "A" and out[4] == {"prediction": out[4]["prediction"]}
    assert out[0]["prediction"]["probabilities"]["home"] == pytest.approx(1 / 3)
    assert out[1] == out[5] == {"error": "MatchNotFound", "detail": "no match with match_id=123"}
    assert out[2]["error"] == "InvalidInput" and "match_id" in out[2]["detail"]
    assert out[3] == {"error": "InvalidInput", "detail": "payload must be a JSON object"}
