"""Scores and the fast predictor."""

from __future__ import annotations

import numpy as np
import pytest

from matchcast.model.predictor import Predictor, make_pipeline
from matchcast.model.scoring import all_scores, outcome_index, rps, rps_each


def test_rps_of_known_forecasts() -> None:
    y = outcome_index(["H", "D", "A"])
    assert rps(np.eye(3), y) == 0.0
    uniform = np.full((3, 3), 1 / 3)
    assert rps_each(uniform, y) == pytest.approx([5 / 18, 1 / 9, 5 / 18])
    # A sure home win that ends in an away win is the worst case.
    assert rps(np.array([[1.0, 0.0, 0.0]]), outcome_index(["A"])) == pytest.approx(1.0)


def test_all_scores_has_every_metric() -> None:
    y = outcome_index(["H", "A"])
    scores = all_scores(np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]]), y)
    assert set(scores) == {"rps", "log_loss", "brier", "accuracy", "n"}
    assert scores["accuracy"] == 1.0 and scores["n"] == 2


def test_predictor_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)) * [1, 10, 100, 0.1] + [0, 5, 1500, 1]
    y = (x[:, 0] + rng.normal(size=600) > 0).astype(int) * 2
    y[::5] = 1
    pipe = make_pipeline().fit(x, y)
    pred = Predictor.from_pipeline(pipe, ("a", "b", "c", "d"))
    np.testing.assert_allclose(pred.predict_proba(x), pipe.predict_proba(x), rtol=1e-9, atol=1e-12)
    assert pred.predict_proba(x[0]).shape == (1, 3)
    with pytest.raises(ValueError, match="expected 4 features"):
        pred.predict_proba(np.zeros(3))
