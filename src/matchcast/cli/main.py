"""Typer commands, thin: each parses its options and calls the service, the API or the worker."""

from __future__ import annotations

import importlib.util
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

from matchcast.cli import dead_letters, keys
from matchcast.cli import replay as replay_cli
from matchcast.cli.ux import Commands, print_error, progress_bar, settings_error
from matchcast.config import Settings, configure_logging, get_settings
from matchcast.errors import MatchcastError
from matchcast.tasks.names import LANES

app = typer.Typer(
    cls=Commands,
    help="matchcast: football match outcome predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(dead_letters.app, name="dead-letters")
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    try:
        settings = get_settings()
    except Exception as exc:
        print_error(console, settings_error(exc))
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


def _parse_date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _fail(exc: MatchcastError) -> typer.Exit:
    print_error(console, exc.detail)
    return typer.Exit(1)


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="CSV files (football-data.co.uk layout); the bundled data when none",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    league: Annotated[str | None, typer.Option(help="League of files without a Div column")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Hold back results on or after this date (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Load results and fixtures into the match store and refresh features."""
    settings = _settings()
    from matchcast.service.bootstrap import ingest_files

    cutoff = _parse_date(as_of)
    try:
        with progress_bar(console) as progress:
            out = ingest_files(settings, paths or [], league=league, as_of=cutoff, progress=progress)
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
        with progress_bar(console, "training") as progress:
            result = train_model(settings, progress=progress)
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
def promote(
    version: Annotated[str | None, typer.Argument(help="Version to promote; the challenger by default")] = None,
    force: Annotated[bool, typer.Option(help="Promote without comparing (logged)")] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Show the live paired comparison (shadow vs champion on the same scored matches) and require the "
            "challenger to be better there too (README, Live scores); with --force: show it only",
        ),
    ] = False,
) -> None:
    """Point the serving alias at a candidate if its held-out RPS beats the champion's on the same window."""
    settings = _settings()
    from matchcast.service.lifecycle import promote as do_promote

    if live:
        from matchcast.cli.live import check_live

        check_live(console, settings, version, force=force)
    try:
        p = do_promote(settings, version, force=force)
    except MatchcastError as exc:
        raise _fail(exc) from None
    rps = f" (RPS {p.candidate_rps:.5f} vs {p.champion_rps:.5f})" if p.candidate_rps and p.champion_rps else ""
    console.print(
        f"{settings.model_alias} is now version {p.version}, was {p.previous}{rps}" + (" [forced]" if p.forced else "")
    )


@app.command()
def retrain(
    weeks: Annotated[
        int | None, typer.Option(min=1, max=52, help="Weeks the gate compares on (MATCHCAST_RETRAIN_WEEKS)")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="Fit on matches from this date (MATCHCAST_RETRAIN_FROM; all)")
    ] = None,
) -> None:
    """Retrain on every result, register a challenger, compare it with the champion and promote it if better."""
    settings = _settings()
    from matchcast.cli.retrain import decision_table
    from matchcast.service.retrain import retrain as do_retrain

    try:
        with progress_bar(console, "retraining") as progress:
            out = do_retrain(settings, since=_parse_date(since), weeks=weeks, progress=progress)
    except MatchcastError as exc:
        raise _fail(exc) from None
    stdout = Console()
    stdout.print(decision_table(out.record))
    stdout.print(f"{out.record['decision']}: {out.record['reason']}", soft_wrap=True)
    stdout.print(f"rule: {out.record['rule']}", soft_wrap=True)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (MATCHCAST_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MATCHCAST_API_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Processes (MATCHCAST_API_WORKERS)")] = None,
) -> None:
    """Run the HTTP API (needs a broker and result backend; see `matchcast up`)."""
    settings = _settings()
    processes = workers or settings.api_workers
    if processes > 1:  # the processes' metrics meet in one folder, served together by GET /metrics
        prom_dir = settings.home / "prometheus" / f"api-{os.getpid()}"
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    from matchcast.service.auth import refuse_open_bind

    try:
        refuse_open_bind(settings, host or settings.api_host)
    except MatchcastError as exc:
        raise _fail(exc) from None
    import uvicorn

    uvicorn.run(
        "matchcast.api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's records go through the root handler and its redacting formatter
        access_log=False,
        workers=processes,
    )


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (MATCHCAST_WORKER_CONCURRENCY)")] = None,
    hostname: Annotated[str | None, typer.Option(help="Node name, unique per worker")] = None,
    lane: Annotated[
        str | None,
        typer.Option(
            help="interactive (ml.interactive), bulk (ml, ml.bulk, ml.bulk.N), maintenance (ml.maintenance) or all "
            "(MATCHCAST_WORKER_LANE)"
        ),
    ] = None,
) -> None:
    """Run a Celery worker consuming the `ml` queues of its lane."""
    settings = _settings()
    if lane is not None:
        if lane not in LANES:
            raise typer.BadParameter(f"lane must be one of {', '.join(LANES)}", param_hint="--lane")
        settings = settings.model_copy(update={"worker_lane": lane})
    prom_dir = settings.prometheus_multiproc_dir or settings.home / "prometheus" / f"worker-{os.getpid()}"
    shutil.rmtree(prom_dir, ignore_errors=True)
    prom_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from matchcast.worker.app import create_app

    celery_app = create_app(settings)

    if settings.worker_metrics_port:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1", registry=registry)
    name = hostname or f"matchcast@{socket.gethostname()}-{os.getpid()}"
    celery_app.worker_main(
        [
            "worker",
            "-Q",
            ",".join(LANES[settings.worker_lane]),
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
def beat() -> None:
    """Run celery beat: it sends the scheduled maintenance tasks (feeds every MATCHCAST_FEEDS_INTERVAL_S)."""
    settings = _settings()
    from matchcast.cli.beat import run_beat

    run_beat(settings)


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


@app.command()
def ui(
    host: Annotated[str | None, typer.Option(help="Bind address (MATCHCAST_UI_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MATCHCAST_UI_PORT)", min=1, max=65535)] = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="The API the UI calls (MATCHCAST_UI_API_URL)")
    ] = None,
) -> None:
    """Run the Streamlit UI; it talks to the API over HTTP (started by `matchcast up` too)."""
    settings = _settings()
    from matchcast.cli.stack import ui_command, ui_env

    bind_host, bind_port = host or settings.ui_host, port or settings.ui_port
    if not bind_port:
        raise typer.BadParameter("MATCHCAST_UI_PORT is 0 (no UI); give a port", param_hint="--port")
    _exec_tool(
        "streamlit",
        (bind_host, bind_port, f"UI port {bind_port} on {bind_host} is taken; use --port or MATCHCAST_UI_PORT"),
        ui_command(settings, bind_host, bind_port),
        ui_env(settings, api_url),
    )


@app.command()
def replay(
    date_from: Annotated[str, typer.Option("--from", help="First replay day (YYYY-MM-DD): the stack's as-of day")],
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last match day to replay; the season's end if none")
    ] = None,
    day_seconds: Annotated[float, typer.Option(min=0.0, help="Wall-clock seconds per replay day, at least")] = 60.0,
    api_url: Annotated[str, typer.Option(help="The running stack's API")] = "http://127.0.0.1:8000",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the replay's feed server (0: any)")] = 8765,
    hold: Annotated[bool, typer.Option(help="Keep serving the last day's files until Ctrl-C")] = True,
) -> None:
    """Play the held-back season day by day through the stack's feeds: forecasts, results, live scores.

    Sends MATCHCAST_UI_API_KEY, if set, as the UI does (a key with the predict scope)."""
    settings = _settings()
    start = _parse_date(date_from)
    assert start is not None
    end = _parse_date(date_to) or date(start.year if start.month < 7 else start.year + 1, 6, 30)
    if end < start:
        raise typer.BadParameter("--to is before --from")
    key = settings.ui_api_key.get_secret_value() if settings.ui_api_key else None
    plan = replay_cli.ReplayPlan(start, end, day_seconds, api_url, key, "127.0.0.1", port, settings.home, hold=hold)
    raise typer.Exit(replay_cli.run(plan, console))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port of Flower's web UI", min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(help="Bind address of Flower's web UI")] = "127.0.0.1",
) -> None:
    """Run Flower, Celery's web monitor, on matchcast's broker (needs `pip install flower`).

    More Flower options go after the others, e.g. `matchcast flower --basic-auth=user:password`.
    """
    settings = _settings()
    from matchcast.cli.stack import child_env

    cmd = [sys.executable, "-m", "celery", "-A", "matchcast.worker.entry:app", "flower"]
    cmd += [f"--address={address}", f"--port={port}", *ctx.args]
    _exec_tool("flower", (address, port, f"port {port} on {address} is taken; use --port"), cmd, child_env(settings))


def _exec_tool(module: str, bind: tuple[str, int, str], cmd: list[str], env: dict[str, str]) -> None:
    """Replace this process by a tool's server, once its package is installed and its port is free."""
    from matchcast.cli.stack import _port_free

    if importlib.util.find_spec(module) is None:
        print_error(console, f"{module.capitalize()} is not installed: pip install {module}")
        raise typer.Exit(1)
    host, port, taken = bind
    if not _port_free(host, port):
        print_error(console, taken)
        raise typer.Exit(1)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)


_METRIC_TITLES = {"rps": "RPS (primary)", "log_loss": "log loss", "brier": "Brier", "accuracy": "accuracy"}


def _score_table(summary: Any, metric: str, by_season: bool) -> Table:
    from matchcast.model.evaluate import ALL, MODEL_LABELS, MODELS

    lower_is_better = metric != "accuracy"
    table = Table(title=f"{_METRIC_TITLES[metric]}, walk-forward", title_justify="left")
    table.add_column("league")
    table.add_column("season")
    table.add_column("n", justify="right")
    for model in MODELS:
        table.add_column(MODEL_LABELS[model], justify="right")
    if metric == "rps":
        table.add_column("matchcast - DC (SE)", justify="right")
    rows = summary if by_season else summary[summary["season"] == ALL]
    for _, row in rows.iterrows():
        values = [float(row[f"{m}_{metric}"]) for m in MODELS]
        best = min(values) if lower_is_better else max(values)
        cells = [f"[bold]{v:.4f}[/bold]" if v == best else f"{v:.4f}" for v in values]
        extra = []
        if metric == "rps":
            extra = [f"{row['rps_diff_vs_dc']:+.4f} ({row['rps_diff_vs_dc_se']:.4f})"]
        pooled = row["league"] == ALL and row["season"] == ALL
        table.add_row(str(row["league"]), str(row["season"]), f"{int(row['n'])}", *cells, *extra, end_section=pooled)
    return table


@app.command()
def evaluate(
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: MATCHCAST_HOME/evaluation)", file_okay=False)
    ] = None,
    league: Annotated[
        list[str] | None, typer.Option("--league", help="Evaluate this league only (repeatable); all by default")
    ] = None,
    start: Annotated[
        str, typer.Option("--from", help="First season (2020/21) or first date (YYYY-MM-DD), inclusive")
    ] = "2020/21",
    end: Annotated[str, typer.Option("--to", help="Last season (2024/25) or last date (YYYY-MM-DD), inclusive")] = (
        "2024/25"
    ),
    by_season: Annotated[bool, typer.Option("--by-season", help="Print a row per league and season")] = False,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow")] = True,
) -> None:
    """Walk-forward backtest of matchcast against Dixon-Coles, league frequencies and uniform forecasts."""
    settings = _settings()
    from matchcast.model.evaluate import METRICS
    from matchcast.service.evaluation import run_evaluation

    try:
        with progress_bar(console) as progress:
            result = run_evaluation(
                settings,
                out=out,
                leagues=league or (),
                start=start,
                end=end,
                log_to_mlflow=mlflow,
                progress=progress,
            )
    except MatchcastError as exc:
        raise _fail(exc) from None
    ev = result.evaluation
    stdout = Console() if sys.stdout.isatty() else Console(width=120)  # files and pipes get the whole table
    for metric in METRICS:
        stdout.print(_score_table(ev.summary, metric, by_season and metric == "rps"))
    from matchcast.cli.goal_tables import goal_table

    stdout.print(goal_table(ev.goals))
    dc = ev.paired["dc"]
    stdout.print(
        f"pooled RPS difference matchcast - Dixon-Coles: {dc['mean']:+.4f} (SE {dc['se']:.4f}, "
        f"n={int(dc['n'])}; negative favours matchcast)"
    )
    console.print(
        f"{ev.counts['matches']} matches on {ev.counts['days']} days, {ev.counts['model_refits']} model refits, "
        f"{ev.counts['dc_fits']} Dixon-Coles fits ({ev.counts['dc_failed_predictions']} Dixon-Coles grids refused, "
        f"replaced by clipped ones), in {result.seconds:.0f} s; outputs in {result.out}"
        + (f"; MLflow run {result.run_id}" if result.run_id else "")
    )


def main() -> None:
    """Console entry point."""
    app()
