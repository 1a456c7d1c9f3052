"""A Dixon-Coles grid refused for one pair is replaced, counted, and ends nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest

pytest.importorskip("penaltyblog")

from matchcast.model.dixon_coles import DixonColes
from matchcast.model.evaluate import EvalConfig


class Refusing:
    """A fitted model whose grid for one pair has a negative low-score cell (penaltyblog raises)."""

    teams = ("A", "B", "C", "D")

    def get_params(self) -> dict[str, float]:
        out = {"home_advantage": 0.25, "rho": -0.9}
        for t in self.teams:
            out |= {f"attack_{t}": 0.1, f"defence_{t}": -0.1}
        return out

    def predict(self, home: str, away: str, max_goals: int = 15) -> Any:
        import penaltyblog as pb

        if (home, away) == ("A", "B"):
            raise ValueError("goal_matrix contains negative probabilities")
        return pb.models.create_dixon_coles_grid(1.2, 1.0, -0.05, max_goals=max_goals)


def test_a_refused_grid_is_replaced_and_counted() -> None:
    dc = DixonColes([], EvalConfig())
    dc.fitted["x"] = (date(2024, 1, 1), Refusing())
    out = dc.predict("x", date(2024, 1, 2), [("A", "B"), ("C", "D"), ("A", "Z")])
    assert out is not None
    probs, grids = out
    assert (dc.failures, dc.fallbacks) == (1, 1)
    assert np.allclose(probs.sum(axis=1), 1.0) and np.isfinite(probs).all()
    assert (grids >= 0).all() and np.allclose(grids.sum(axis=(1, 2)), 1.0)
