"""Typer commands, thin: each parses its options and calls the service, the API or the worker."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from matchcast.config import ML_QUEUE, Settings, get_settings
from matchcast.errors import MatchcastError

app = typer.Typer(
    help="matchcast: football match outcome predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    try:
        settings = get_settings()
    except Exception as exc:
        console.print(f"[red]error:[/red] invalid MATCHCAST_* setting: {exc}")
        raise typer.Exit(2) from None
    _logging(settings)
    return settings


def _parse_date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _fail(exc: MatchcastError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc.detail}")
    return typer.Exit(1)


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="CSV files (football-data.co.uk layout); the bundled data when none")
    ] = None,
    league: Annotated[str | None, typer.Option(help="League of files without a Div column")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Hold back results on or after this date (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Load results and fixtures into the match store and refresh features."""
    settings = _settings()
    from matchcast.service.bootstrap import ingest_files

    try:
        with console.status("ingesting…"):
            out = ingest_files(settings, paths or [], league=league, as_of=_parse_date(as_of))
    except MatchcastError as exc:
        raise _fail(exc) from None
    r = out.report
    console.print(
        f"{len(r.files)} files, {r.rows} matches: {r.inserted} new, {r.updated} updated, "
        f"{r.unchanged} unchanged, {r.held_back} results held back; "
        f"{out.features_changed} feature rows refreshed"
    )


@app.command()
def train() -> None:
    """Train on the store, log to MLflow, register a version and point the serving alias at it."""
    settings = _settings()
    from matchcast.service.bootstrap import train_model

    try:
        with console.status("training…"):
            result = train_model(settings)
    except MatchcastError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{settings.model_name} version {result.version} -> alias {result.alias_set}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        table.add_row(k, f"{v:.4f}" if k != "heldout_n" else f"{v:.0f}")
    Console().print(table)
    console.print(
        f"trained on {result.n_train} matches {result.window[0]}..{result.window[1]}; "
        f"held-out season {result.held_out_season}"
    )


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (MATCHCAST_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MATCHCAST_API_PORT)")] = None,
) -> None:
    """Run the HTTP API (needs a broker and result backend; see `matchcast up`)."""
    settings = _settings()
    import uvicorn

    uvicorn.run(
        "matchcast.api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (MATCHCAST_WORKER_CONCURRENCY)")] = None,
    hostname: Annotated[str | None, typer.Option(help="Node name, unique per worker")] = None,
) -> None:
    """Run a Celery worker consuming the `ml` queue."""
    settings = _settings()
    prom_dir = settings.prometheus_multiproc_dir or settings.home / "prometheus" / f"worker-{os.getpid()}"
    shutil.rmtree(prom_dir, ignore_errors=True)
    prom_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from matchcast.worker.app import app as celery_app

    if settings.worker_metrics_port:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1", registry=registry)
    name = hostname or f"matchcast@{socket.gethostname()}-{os.getpid()}"
    celery_app.worker_main(
        [
            "worker",
            "-Q",
            ML_QUEUE,
            "-c",
            str(concurrency or settings.worker_concurrency),
            "-n",
            name,
            "-P",
            "prefork",
            "--loglevel",
            settings.log_level.upper(),
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def up() -> None:
    """Run everything: embedded Redis (unless MATCHCAST_BROKER_URL is set), data, model, worker and API."""
    settings = _settings()
    from matchcast.cli.stack import run_stack

    try:
        code = run_stack(settings, console)
    except MatchcastError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def main() -> None:
    """Console entry point."""
    app()
