"""How the command line talks to people: one-line errors instead of tracebacks, progress bars."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from typer.core import TyperGroup

from matchcast.errors import MatchcastError

log = logging.getLogger("matchcast.cli")
ProgressFn = Callable[[str, int, int], None]


def print_error(console: Console, message: str) -> None:
    """``error: message`` on one line (never wrapped, no markup interpreted in ``message``)."""
    first = " ".join(message.strip().splitlines()) if message.strip() else "failed"
    console.print(Text.assemble(("error: ", "bold red"), first), soft_wrap=True)


def settings_error(exc: Exception) -> str:
    """A settings validation error as one line naming each variable: ``MATCHCAST_API_PORT: Input should be …``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"invalid MATCHCAST_* setting: {exc}"
    parts = []
    for err in errors():
        name = "_".join(str(x) for x in err.get("loc", ()) if x != "__root__").upper()
        parts.append(f"MATCHCAST_{name}: {err.get('msg')}" if name else str(err.get("msg")))
    return "invalid setting: " + "; ".join(parts)


class Commands(TyperGroup):
    """The top command group: a usage mistake or a failure ends in one line and a non-zero exit, no traceback.

    Usage mistakes (unknown option, bad value, missing file) exit 2; anything unexpected exits 1, its traceback
    logged at DEBUG (``MATCHCAST_LOG_LEVEL=DEBUG`` shows it).
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run without click's standalone handling, and handle its exceptions here."""
        console = Console(stderr=True)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # Typer's (vendored) click errors: usage, bad values, files
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
            else:
                where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                print_error(console, exc.format_message() + where)
            code = exc.exit_code
        except typer.Abort:
            print_error(console, "aborted")
            code = 1
        except MatchcastError as exc:
            print_error(console, exc.detail)
            code = 1
        except Exception as exc:
            log.debug("unexpected failure", exc_info=True)
            print_error(console, f"{type(exc).__name__}: {exc} (MATCHCAST_LOG_LEVEL=DEBUG shows the traceback)")
            code = 1
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        raise SystemExit(code)


@contextmanager
def progress_bar(console: Console, title: str | None = None) -> Iterator[ProgressFn]:
    """Rich progress bars fed by ``progress(step, done, total)`` callbacks.

    Without ``title`` each step gets a bar of its own (the previous one is completed when a new step starts);
    with it, one bar ``title: step`` counts the steps.
    """
    columns = (
        SpinnerColumn(finished_text="[green]✓[/green]"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, tuple[TaskID, int]] = {}

        def update(step: str, done: int, total: int) -> None:
            name = title or step
            description = f"{title}: {step}" if title else step
            if name not in tasks:
                for task_id, task_total in tasks.values():
                    bar.update(task_id, completed=task_total)
                tasks[name] = (bar.add_task(description, total=total), total)
            task_id, _ = tasks[name]
            tasks[name] = (task_id, total)
            bar.update(task_id, description=description, completed=done, total=total)

        try:
            yield update
        except BaseException:
            bar.live.transient = True  # a failure leaves its one error line, not a half-filled bar
            raise
        for task_id, task_total in tasks.values():
            bar.update(task_id, completed=task_total)
