"""``matchcast dead-letters list|replay``: the dead-letter queue from the command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from matchcast.config import get_settings
from matchcast.errors import MatchcastError

app = typer.Typer(help="Tasks given up on: list them, replay one.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones")] = False,
) -> None:
    """List dead letters: id, task, reason, attempts, error, original arguments."""
    from matchcast.data.dead_letters import DeadLetters
    from matchcast.service.wiring import store_for

    total, rows = DeadLetters(store_for(get_settings())).list(limit=limit, include_replayed=all_)
    table = Table(title=f"{total} dead letters" + ("" if all_ else " (not replayed)"))
    for col in ("id", "task_id", "reason", "attempts", "error", "args", "replayed as"):
        table.add_column(col)
    for d in rows:
        table.add_row(
            str(d.id), d.task_id, d.reason, str(d.attempts), d.error[:80], str(d.args)[:60], d.replay_task_id or ""
        )
    Console().print(table)


@app.command()
def replay(dead_letter_id: Annotated[int, typer.Argument(min=1, help="The dead letter's id")]) -> None:
    """Submit a dead letter's original arguments again as a new task; prints its task id."""
    from matchcast.data.dead_letters import DeadLetters
    from matchcast.service.wiring import store_for
    from matchcast.tasks.replay import replay as do_replay

    settings = get_settings()
    try:
        task_id = do_replay(settings, DeadLetters(store_for(settings)), dead_letter_id)
    except MatchcastError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    print(task_id)
    console.print(f"replayed as task {task_id}: GET /monitoring/task_status/{task_id}")
