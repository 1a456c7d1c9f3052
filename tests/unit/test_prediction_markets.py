"""Every prediction carries markets read off one grid that agrees with the served 1X2 (through the JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from matchcast.data.store import MatchStore
from matchcast.model.goals import GoalsModel
from matchcast.model.predictor import Predictor
from matchcast.model.registry import LoadedModel
from matchcast.schemas import FEATURE_NAMES, Prediction
from matchcast.service.prediction import PredictionService
from tests.unit.test_prediction_payloads import features


class GoalsRegistry:
    """Serves a model with a non-trivial classifier and goals model."""

    def __init__(self, goals: bool = True) -> None:
        self.goals = goals

    def load(self, alias: str) -> LoadedModel:
        n = len(FEATURE_NAMES)
        rng = np.random.default_rng(4)
        mean = np.array(list(features().values()))
        goals = GoalsModel(rng.normal(0, 0.05, (2, n)), np.array([0.35, 0.1]), -0.08) if self.goals else None
        predictor = Predictor(mean, mean / 4 + 1, rng.normal(0, 0.3, (3, n)), np.array([0.4, 0.0, -0.1]), FEATURE_NAMES)
        return LoadedModel("matchcast", "3", alias, None, predictor.with_goals(goals), "v-test")


def payloads(n: int, grid: bool = True) -> list[dict[str, object]]:
    rng = np.random.default_rng(9)
    base = features()
    out: list[dict[str, object]] = []
    for _ in range(n):
        f = {k: float(v * rng.uniform(0.7, 1.3)) for k, v in base.items()}
        f |= {"league_draw_rate": 0.3, "promoted_home": 0.0, "promoted_away": 1.0, "no_crowd": 0.0}
        out.append({"features": f, "grid": grid})
    return out


@pytest.mark.parametrize("goals", [True, False], ids=["goals-model", "registered-before-goals-models"])
def test_the_grid_gives_the_served_1x2_and_every_market(tmp_path: Path, goals: bool) -> None:
    svc = PredictionService(MatchStore(f"sqlite:///{tmp_path / 's.db'}"), GoalsRegistry(goals), "champion")  # type: ignore[arg-type]
    out = svc.predict_each(payloads(40))
    single = svc.predict(payloads(1)[0])
    for entry in [*(o["prediction"] for o in out), single]:
        served = Prediction.model_validate(orjson.loads(orjson.dumps(entry)))  # as the API reads it
        assert served.grid is not None and served.markets is not None and served.expected_goals is not None
        g = np.array(served.grid)
        i, j = np.indices(g.shape)
        p = served.probabilities
        assert abs(g[i > j].sum() - p.home) < 1e-9
        assert abs(g[i == j].sum() - p.draw) < 1e-9
        assert abs(g[i < j].sum() - p.away) < 1e-9
        m = served.markets
        assert m["btts"]["yes"] == pytest.approx(g[1:, 1:].sum(), abs=1e-12)
        assert [o["over"] for o in m["over_under"]] == pytest.approx(
            [g[i + j > line].sum() for line in (0.5, 1.5, 2.5, 3.5, 4.5)], abs=1e-12
        )
        assert m["double_chance"]["home_draw"] == pytest.approx(p.home + p.draw, abs=1e-9)
        assert m["draw_no_bet"]["home"] == pytest.approx(p.home / (p.home + p.away), abs=1e-9)
        ah = {a["line"]: a for a in m["asian_handicap"]}
        assert ah[0.0]["push"] == pytest.approx(p.draw, abs=1e-9) and ah[-0.5]["win"] == pytest.approx(p.home)
        assert served.expected_goals["home"] == pytest.approx((i * g).sum(), abs=1e-12)


def test_grid_only_when_asked_and_markets_off(tmp_path: Path) -> None:
    store = MatchStore(f"sqlite:///{tmp_path / 's.db'}")
    on = PredictionService(store, GoalsRegistry(), "champion")  # type: ignore[arg-type]
    off = PredictionService(store, GoalsRegistry(), "champion", markets=False)  # type: ignore[arg-type]
    body = payloads(1, grid=False)[0]
    with_markets = on.predict(body)
    assert "grid" not in with_markets or with_markets["grid"] is None
    assert with_markets["markets"]["top_scores"] and with_markets["expected_goals"]
    plain = off.predict(body)
    assert plain["markets"] is None and plain["expected_goals"] is None and plain["grid"] is None
    assert plain["probabilities"] == pytest.approx(with_markets["probabilities"], abs=1e-12)
    grouped = on.predict_each([body])[0]["prediction"]
    assert grouped.get("grid") is None
    assert grouped["markets"] == with_markets["markets"]
