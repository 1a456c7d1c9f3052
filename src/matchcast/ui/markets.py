"""The goal markets of a prediction (scoreline heatmap, expected goals, markets) and their evaluation table.

Reads only the API's JSON (``expected_goals``, ``markets``, ``grid``) and the files ``matchcast evaluate``
writes; a prediction without markets (``MATCHCAST_MARKETS=false``) shows nothing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

HEATMAP_GOALS = 6  # rows and columns shown: 0..5 goals each side (the rest of the grid is rarely above 0.5%)
GOAL_METRICS = {
    "ou25_log_loss": "O/U 2.5 log loss",
    "btts_log_loss": "BTTS log loss",
    "score_log_loss": "exact score log loss",
    "total_rps": "total goals RPS",
}
MODELS = {"matchcast": "matchcast", "dc": "Dixon-Coles", "freq": "frequency", "uniform": "uniform"}


def heatmap_frame(grid: list[list[float]], side: int = HEATMAP_GOALS) -> pd.DataFrame:
    """Long form of the top-left ``side`` x ``side`` corner of the grid: home goals, away goals, probability."""
    rows = [
        {"home goals": i, "away goals": j, "probability": grid[i][j]}
        for i in range(min(side, len(grid)))
        for j in range(min(side, len(grid[i])))
    ]
    return pd.DataFrame(rows)


def markets_frame(markets: dict[str, Any]) -> pd.DataFrame:
    """Every market as rows of (market, selection, probability)."""
    rows: list[tuple[str, str, float]] = []
    for o in markets["over_under"]:
        rows += [(f"total goals {o['line']}", "over", o["over"]), (f"total goals {o['line']}", "under", o["under"])]
    rows += [("both teams to score", k, v) for k, v in markets["btts"].items()]
    rows += [("double chance", k.replace("_", " or "), v) for k, v in markets["double_chance"].items()]
    rows += [("draw no bet", k, v) for k, v in markets["draw_no_bet"].items()]
    for a in markets["asian_handicap"]:
        line = f"home {a['line']:+.1f}"
        rows += [(f"Asian handicap {line}", k, a[k]) for k in ("win", "push", "lose")]
    return pd.DataFrame(rows, columns=["market", "selection", "probability"])


def show_markets(pred: dict[str, Any]) -> None:
    """Expected goals, the scoreline heatmap (when the grid came along), the likeliest scores and every market."""
    markets, xg = pred.get("markets"), pred.get("expected_goals")
    if not markets or not xg:
        return
    st.markdown(f"**Expected goals** home {xg['home']:.2f} · away {xg['away']:.2f}")
    grid = pred.get("grid")
    if grid:
        st.vega_lite_chart(
            heatmap_frame(grid),
            {
                "height": 260,
                "mark": {"type": "rect"},
                "encoding": {
                    "x": {"field": "away goals", "type": "ordinal"},
                    "y": {"field": "home goals", "type": "ordinal"},
                    "color": {"field": "probability", "type": "quantitative", "legend": {"format": "%"}},
                    "tooltip": [
                        {"field": "home goals"},
                        {"field": "away goals"},
                        {"field": "probability", "format": ".1%"},
                    ],
                },
            },
            width="stretch",
        )
    top = ", ".join(f"{s['home_goals']}-{s['away_goals']} {s['probability']:.1%}" for s in markets["top_scores"])
    st.markdown(f"**Likeliest scores** {top}")
    with st.expander("Goal markets"):
        st.dataframe(
            markets_frame(markets),
            hide_index=True,
            column_config={"probability": st.column_config.NumberColumn(format="percent")},
        )


def goal_evaluation_frame(path: Path) -> pd.DataFrame:
    """The per-league and pooled rows of ``goals_summary.csv``: each model's score and matchcast - DC (SE)."""
    goals = pd.read_csv(path)
    goals = goals[goals["season"] == "all"]
    out = pd.DataFrame({"league": goals["league"], "n": goals["n"]})
    for metric, title in GOAL_METRICS.items():
        for model, label in MODELS.items():
            out[f"{title}: {label}"] = goals[f"{model}_{metric}"].round(4)
        diff, se = goals[f"{metric}_diff_vs_dc"], goals[f"{metric}_diff_vs_dc_se"]
        out[f"{title}: matchcast - DC (SE)"] = [f"{d:+.4f} ({s:.4f})" for d, s in zip(diff, se, strict=True)]
    return out.reset_index(drop=True)


def show_goal_evaluation(folder: Path) -> None:
    """The goal-market evaluation table and its calibration plot, when ``matchcast evaluate`` wrote them."""
    summary, calibration = folder / "goals_summary.csv", folder / "goals_calibration.png"
    if not summary.exists():
        return
    st.subheader("Goal markets")
    try:
        st.dataframe(goal_evaluation_frame(summary), hide_index=True)
    except Exception as exc:
        st.warning(f"{summary} could not be read: {exc}")
    if calibration.exists():
        st.image(str(calibration), caption="Calibration of over 2.5 and both teams to score")
