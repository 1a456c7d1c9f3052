"""``matchcast promote --live``: the challenger's live paired comparison with the champion, shown and checked."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from matchcast.config import CHALLENGER_ALIAS, Settings
from matchcast.service.live import WINDOWS, live_comparison, live_gate
from matchcast.service.wiring import registry_for


def _fmt(x: float | None, sign: bool = False) -> str:
    return "" if x is None else (f"{x:+.5f}" if sign else f"{x:.5f}")


def check_live(console: Console, settings: Settings, version: str | None, *, force: bool) -> None:
    """Print the live comparison of the candidate (default: the challenger); exit 1 unless ``live_gate`` passes
    (or ``force``)."""
    candidate = version or registry_for(settings).version_of(CHALLENGER_ALIAS)
    if candidate is None:
        console.print("no challenger: nothing to compare")
        raise typer.Exit(1)
    comparison = live_comparison(settings, candidate)
    if comparison is not None:
        table = Table(title=f"live: challenger {candidate} vs champion {comparison.champion_version}")
        for col in ("window", "matches", "champion RPS", "challenger RPS", "difference", "SE"):
            table.add_column(col, justify="left" if col == "window" else "right")
        for w in WINDOWS:
            p = comparison.windows[w]
            table.add_row(
                w, str(p.n), _fmt(p.champion_rps), _fmt(p.challenger_rps), _fmt(p.rps_diff, True), _fmt(p.rps_diff_se)
            )
        console.print(table)
    refusal = live_gate(comparison)
    if refusal and not force:
        console.print(f"[red]not promoted[/red]: {refusal}; --force promotes anyway")
        raise typer.Exit(1)
    if refusal:
        console.print(f"live comparison does not support it ({refusal}); promoting anyway (--force)")
