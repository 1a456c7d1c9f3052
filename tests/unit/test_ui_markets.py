"""The UI shows the scoreline heatmap, expected goals and markets, and the goal-market evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matchcast.model.goals import conform, dixon_coles_grid, markets_json
from tests.unit.test_ui import FakeApi, page, texts


class MarketsApi(FakeApi):
    """The fake API, its predictions with markets and grid as the real one answers ``grid=true``."""

    def prediction(self, match_id: int | None, **labels: Any) -> dict[str, Any]:
        pred = super().prediction(match_id, **labels)
        p = pred["probabilities"]
        grid = conform(
            dixon_coles_grid(np.array([1.5]), np.array([1.1]), -0.1), np.array([[p["home"], p["draw"], p["away"]]])
        )
        return pred | markets_json(grid, with_grid=[True])[0]


def test_prediction_view_shows_heatmap_expected_goals_and_markets(tmp_path: Path) -> None:
    api = MarketsApi()
    at = page("upcoming", api, tmp_path).run()
    at.button(key="up_predict").click().run()
    assert not at.exception and not at.error
    sync = [r for r in api.calls if r.url.path.startswith("/predict/1")]
    assert sync and sync[-1].url.params["grid"] == "true"
    shown = texts(at)
    assert "Expected goals" in shown and "Likeliest scores" in shown
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert len(specs) == 2 and '"rect"' in specs[1]  # the heatmap below the 1X2 bars
    frames = [d.value for d in at.dataframe]
    markets = next(f for f in frames if "market" in f.columns)
    assert "both teams to score" in set(markets["market"]) and "Asian handicap home -0.5" in set(markets["market"])


def test_model_page_shows_the_goal_market_evaluation(tmp_path: Path) -> None:
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "summary.csv").write_text("model,rps\nmatchcast,0.1990\nuniform,0.2220\n")
    cols = ["league", "season", "n"]
    values: list[object] = ["all", "all", 100]
    for metric in ("ou25_log_loss", "ou25_brier", "btts_log_loss", "btts_brier", "score_log_loss", "total_rps"):
        for model in ("matchcast", "dc", "freq", "uniform"):
            cols.append(f"{model}_{metric}")
            values.append(0.68)
    for metric in ("ou25_log_loss", "btts_log_loss", "score_log_loss", "total_rps"):
        cols += [f"{metric}_diff_vs_dc", f"{metric}_diff_vs_dc_se"]
        values += [-0.004, 0.001]
    (folder / "goals_summary.csv").write_text(",".join(cols) + "\n" + ",".join(map(str, values)) + "\n")
    at = page("model", MarketsApi(), tmp_path).run()
    assert not at.exception and not at.error
    assert "Goal markets" in texts(at)
    table = at.dataframe[-1].value
    assert table["O/U 2.5 log loss: matchcast - DC (SE)"].tolist() == ["-0.0040 (0.0010)"]
