"""The summary ``matchcast retrain`` prints: the gate's decision and both models' scores."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def decision_table(record: dict[str, Any]) -> Table:
    """The decision record as a table."""
    promoted = record["decision"] == "promoted"
    verdict = "[bold green]promoted[/]" if promoted else "[bold yellow]rejected[/]"
    table = Table(title=f"retrain: version {record['challenger_version']} {verdict}", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    weeks = record["window"]["weeks"]
    training = record["training"]
    rows = [
        ("challenger (new) version", record["challenger_version"]),
        (f"{record['alias']} before / after", f"{record['champion_version']} / {record['serving_version']}"),
        ("challenger RPS", _num(record["challenger_rps"], ".5f")),
        ("champion RPS", _num(record["champion_rps"], ".5f")),
        ("paired difference (SE)", f"{_num(record['rps_diff'], '+.5f')} ({_num(record['rps_diff_se'], '.5f')})"),
        ("matches compared", str(record["window"]["n"])),
        ("weeks", f"{len(weeks)}: {weeks[0][0]} .. {weeks[-1][1]}" if weeks else "-"),
        ("trained on", f"{training['n_train']} matches {training['window_start']} .. {training['window_end']}"),
        (f"held-out {training['held_out_season']} RPS", _num(training["heldout_rps"], ".5f")),
        ("seconds (dataset, train, gate, total)", ", ".join(f"{v:.0f}" for v in record["seconds"].values())),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table
