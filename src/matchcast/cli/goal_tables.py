"""The goal-market table of ``matchcast evaluate``."""

from __future__ import annotations

from typing import Any

from rich.table import Table

_COLUMNS = (
    ("ou25_log_loss", "O/U 2.5 log loss"),
    ("btts_log_loss", "BTTS log loss"),
    ("score_log_loss", "score log loss"),
    ("total_rps", "total goals RPS"),
)


def goal_table(goals: Any) -> Table:
    """Per league and pooled: matchcast / Dixon-Coles / frequency / uniform, and matchcast - DC (SE)."""
    table = Table(
        title="Goal markets, walk-forward (matchcast / Dixon-Coles / frequency / uniform; lower is better)",
        title_justify="left",
    )
    for name, justify in (("league", "left"), ("n", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for _, title in _COLUMNS:
        table.add_column(title, justify="right")
        table.add_column("mc - DC (SE)", justify="right")
    for _, row in goals[goals["season"] == "all"].iterrows():
        cells: list[str] = []
        for metric, _ in _COLUMNS:
            cells.append(
                " / ".join(f"{float(row[f'{m}_{metric}']):.4f}" for m in ("matchcast", "dc", "freq", "uniform"))
            )
            cells.append(f"{row[f'{metric}_diff_vs_dc']:+.4f} ({row[f'{metric}_diff_vs_dc_se']:.4f})")
        table.add_row(str(row["league"]), f"{int(row['n'])}", *cells, end_section=row["league"] == "all")
    return table
