"""matchcast as a system of hosts, built on one machine: the README's multi-machine recipe, run.

| host | runs |
|---|---|
| ``broker-1``..``broker-3`` | a RabbitMQ cluster (``pause_minority``); ``ml`` queues: quorum, on all three |
| ``backend-1``, ``backend-2`` | Redis, the result backend (append-only file): the master and its replica, and a
  Sentinel on each |
| ``backend-3`` | the third Sentinel (quorum 2) |
| ``registry`` | ``mlflow server --serve-artifacts`` and PostgreSQL (the match store) |
| ``api-1``, ``api-2`` | ``matchcast api`` |
| ``worker-1``, ``worker-2`` | ``matchcast worker --lane bulk`` |
| ``worker-3`` | ``matchcast worker --lane interactive`` |
| ``worker-4`` | nothing at first: a host that joins (``tests/hosts/test_leave_join.py``) |

Every matchcast process gets only environment variables (``host_env``): URLs by host name, and a home and temp
folder of its own; no path is shared between hosts. The test stands on the bridge (``OPS_ADDRESS``): it loads the
match store over the network and trains the first model into the MLflow server over HTTP, as an operator would.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.backoff import NoBackoff
from redis.retry import Retry

from matchcast.config import Settings
from tests.hosts.netns import Network, teardown
from tests.hosts.services import (
    MlflowServer,
    Postgres,
    Proc,
    RabbitNode,
    RedisServer,
    SentinelServer,
    base_env,
    wait_port,
)

NO_RETRY = Retry(NoBackoff(), 0)  # a cut host costs its timeout once (redis-py retries 10 times by default)
BROKERS = ("broker-1", "broker-2", "broker-3")
BACKENDS = ("backend-1", "backend-2")  # Redis data nodes: the first master, its replica
SENTINELS = ("backend-1", "backend-2", "backend-3")
MASTER_NAME = "matchcast"
APIS = ("api-1", "api-2")
BULK_WORKERS = ("worker-1", "worker-2")
INTERACTIVE_WORKERS = ("worker-3",)
JOINING_WORKER = "worker-4"  # a host with nothing running until a test starts a worker on it
HOSTS = {
    "broker-1": 11,
    "broker-2": 12,
    "broker-3": 13,
    "backend-1": 20,
    "backend-2": 22,
    "backend-3": 23,
    "registry": 21,
    "api-1": 31,
    "api-2": 32,
    "worker-1": 41,
    "worker-2": 42,
    "worker-3": 43,
    "worker-4": 44,
}
API_PORT = 8000
SYNC_TIMEOUT_S = 20.0


@dataclass
class Topology:
    """The hosts, their services and matchcast processes."""

    root: Path
    net: Network = field(default_factory=lambda: Network(HOSTS))
    cookie: str = field(default_factory=lambda: secrets.token_hex(20))
    brokers: list[RabbitNode] = field(default_factory=list)
    redis: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelServer] = field(default_factory=list)
    postgres: Postgres | None = None
    mlflow: MlflowServer | None = None
    apis: dict[str, Proc] = field(default_factory=dict)
    workers: dict[str, Proc] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # --- what a host is told -------------------------------------------------------------------------------
    def broker_url(self, by_address: bool = False) -> str:
        """The cluster as a failover list of broker URLs (kombu tries them in turn)."""
        return ";".join(b.url(b.address if by_address else None) for b in self.brokers)

    def backend_url(self, by_address: bool = False) -> str:
        """The result backend as its Sentinels (each asked for the master in turn)."""
        return ";".join(s.url(s.net.address(s.host) if by_address else None) for s in self.sentinels)

    def host_env(self, host: str) -> dict[str, str]:
        """Every variable a matchcast host gets: the whole of what it knows about the system."""
        assert self.sentinels and self.postgres and self.mlflow
        own = self.root / host
        own.mkdir(parents=True, exist_ok=True)
        return {
            **base_env(),
            "HOME": str(own),
            "TMPDIR": str(own),
            "MATCHCAST_HOME": str(own / "matchcast"),
            "MATCHCAST_BROKER_URL": self.broker_url(),
            "MATCHCAST_RESULT_BACKEND": self.backend_url(),
            "MATCHCAST_RESULT_BACKEND_MASTER_NAME": MASTER_NAME,
            "MATCHCAST_RESULT_BACKEND_WAIT_REPLICAS": "1",
            "MATCHCAST_RESULT_BACKEND_RETRY_S": "30",
            "MATCHCAST_DATABASE_URL": self.postgres.url(),
            "MATCHCAST_MLFLOW_TRACKING_URI": self.mlflow.url(),
            "MATCHCAST_WORKER_METRICS_PORT": "0",
            "MATCHCAST_RATE_LIMIT_PER_S": "0",
            "MATCHCAST_SYNC_TIMEOUT_S": f"{SYNC_TIMEOUT_S:g}",
            "MATCHCAST_MAX_BACKLOG": "100000",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }

    def ops_settings(self) -> Settings:
        """Settings for the test itself, standing on the bridge (addresses, not names: it has no hosts file)."""
        assert self.sentinels and self.postgres and self.mlflow
        return Settings(
            home=self.root / "ops",
            broker_url=self.broker_url(by_address=True),
            result_backend=self.backend_url(by_address=True),
            result_backend_master_name=MASTER_NAME,
            database_url=self.postgres.url(self.net.address("registry")),
            mlflow_tracking_uri=self.mlflow.url(self.net.address("registry")),
            worker_metrics_port=0,
        )

    def busiest_broker(self) -> str:
        """The host whose node holds the most client connections (where cutting the network hurts most)."""
        listed = self.brokers[0].ctl("list_connections", "pid", "--no-table-headers", "--quiet")
        counts = {b.host: listed.count(f"<{b.node}.") for b in self.brokers}  # a connection's pid names its node
        return max(counts, key=lambda h: counts[h])

    def api_base(self, host: str) -> str:
        return f"http://{self.net.address(host)}:{API_PORT}"

    # --- building it ---------------------------------------------------------------------------------------
    def up(self) -> None:
        """Hosts, services, data and model, then the matchcast processes; waits until every API is ready."""
        t0 = time.monotonic()
        self.net.up()
        self.brokers = [
            RabbitNode(self.net, h, self.root / h / "rabbitmq", self.cookie, BROKERS, password=secrets.token_hex(8))
            for h in BROKERS
        ]
        password = self.brokers[0].password
        for b in self.brokers:
            b.password = password  # one user for the cluster: the joining nodes take the first node's users
            b.prepare()
        self.brokers[0].start(wait=False)  # the first node forms the cluster, the others join it
        self.start_backend()
        self.postgres = Postgres(self.net, "registry", self.root / "registry" / "postgres")
        self.postgres.start()
        self.mlflow = MlflowServer(self.net, "registry", self.root / "registry" / "mlflow")
        self.mlflow.start()
        self.brokers[0].wait_up()
        for b in self.brokers[1:]:
            b.start(wait=False)
        self.timings["services_s"] = time.monotonic() - t0
        self._load_and_train()
        self.timings["trained_s"] = time.monotonic() - t0
        for b in self.brokers[1:]:
            b.wait_up()
        self.wait_cluster(len(BROKERS))
        self.timings["cluster_s"] = time.monotonic() - t0
        for host in APIS:
            self.start_api(host)
        for host in APIS:
            wait_port(self.net.address(host), API_PORT, timeout=120, proc=self.apis[host].proc, log=self.apis[host].log)
        for host in BULK_WORKERS:
            self.start_worker(host, "bulk")
        for host in INTERACTIVE_WORKERS:
            self.start_worker(host, "interactive")
        for host in (*BULK_WORKERS, *INTERACTIVE_WORKERS):
            self.wait_worker(host)
        self.wait_ready()
        self.timings["ready_s"] = time.monotonic() - t0

    def start_backend(self) -> None:
        """The master, its replica (once in sync) and the three Sentinels (once they know each other)."""
        import redis

        master = self.net.address(BACKENDS[0])
        self.redis = [RedisServer(self.net, BACKENDS[0], self.root / BACKENDS[0] / "redis")]
        self.redis.append(RedisServer(self.net, BACKENDS[1], self.root / BACKENDS[1] / "redis", replica_of=master))
        for node in self.redis:
            node.start()
        replica = redis.Redis(self.net.address(BACKENDS[1]), socket_timeout=2)
        self._until(lambda: replica.info("replication").get("master_link_status") == "up", "the replica to sync")
        self.sentinels = [SentinelServer(self.net, h, self.root / h / "sentinel", master) for h in SENTINELS]
        for sentinel in self.sentinels:
            sentinel.start()

        def settled() -> bool:
            for s in self.sentinels:
                state = redis.Redis(s.net.address(s.host), s.port, socket_timeout=2, decode_responses=True)
                master_state: dict[str, str] = state.sentinel_master(MASTER_NAME)  # type: ignore[assignment]
                if int(master_state["num-slaves"]) < 1 or int(master_state["num-other-sentinels"]) < 2:
                    return False
            return True

        self._until(settled, "the Sentinels to know the replica and each other", timeout=60)

    def backend_master(self) -> str | None:
        """The host of the result backend's master, as the first Sentinel that answers tells it."""
        import redis

        by_address = {self.net.address(h): h for h in BACKENDS}
        for s in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                ask = redis.Redis(
                    s.net.address(s.host), s.port, socket_timeout=1, socket_connect_timeout=1, retry=NO_RETRY
                )
                addr: Any = ask.sentinel_get_master_addr_by_name(MASTER_NAME)
                if addr:
                    found = addr[0].decode() if isinstance(addr[0], bytes) else str(addr[0])
                    return by_address.get(found)
        return None

    @staticmethod
    def _until(ok: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                if ok():
                    return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def _load_and_train(self) -> None:
        from matchcast.service.bootstrap import train_model
        from tests.conftest import ingest_subset

        settings = self.ops_settings()
        t0 = time.monotonic()
        ingest_subset(settings, first_season=21)  # five seasons of two leagues: 3,800 matches
        self.timings["ingest_s"] = time.monotonic() - t0
        train_model(settings)

    def start_api(self, host: str) -> Proc:
        argv = [
            str(Path(base_env()["PATH"].split(":")[0]) / "python"),
            "-m",
            "matchcast",
            "api",
            "--host",
            self.net.address(host),
            "--port",
            str(API_PORT),
        ]
        self.apis[host] = Proc(host, argv, self.root / host / "api.log", self.host_env(host)).start(self.net)
        return self.apis[host]

    def start_worker(self, host: str, lane: str, concurrency: int = 1) -> Proc:
        argv = [
            str(Path(base_env()["PATH"].split(":")[0]) / "python"),
            "-m",
            "matchcast",
            "worker",
            "--lane",
            lane,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{lane}@{host}",
        ]
        self.workers[host] = Proc(host, argv, self.root / host / "worker.log", self.host_env(host)).start(self.net)
        return self.workers[host]

    def wait_worker(self, host: str, timeout: float = 180) -> None:
        """Until the worker on ``host`` has loaded the model and consumes."""
        w = self.workers[host]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = w.text()
            if "model_loaded" in text and "ready." in text:
                return
            if not w.running():
                raise AssertionError(f"worker on {host} exited:\n{text[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"worker on {host} not ready in {timeout} s:\n{w.text()[-3000:]}")

    def wait_ready(self, timeout: float = 120) -> None:
        """Until every API answers ``/ready`` with 200."""
        deadline = time.monotonic() + timeout
        last = ""
        for host in APIS:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    r = httpx.get(f"{self.api_base(host)}/ready", timeout=5)
                    last = r.text
                    if r.status_code == 200:
                        break
                time.sleep(0.5)
            else:
                raise AssertionError(f"{host} not ready in {timeout} s: {last}\n{self.apis[host].text()[-2000:]}")

    def wait_cluster(self, running: int, via: int = 0, timeout: float = 120) -> None:
        """Until the cluster (as node ``via`` sees it) has ``running`` nodes running."""
        import json

        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                status = json.loads(self.brokers[via].ctl("cluster_status", "--formatter", "json", timeout=30))
                seen = status.get("running_nodes")
                if isinstance(seen, list) and len(seen) == running:
                    return
            time.sleep(1)
        raise AssertionError(f"cluster has {seen} running, wanted {running}")

    def down(self) -> None:
        """Stop everything, remove the hosts (also when ``up`` failed half way)."""
        for p in (*self.workers.values(), *self.apis.values()):
            with contextlib.suppress(Exception):
                p.stop()
        for s in (self.mlflow, self.postgres, *self.sentinels, *self.redis, *self.brokers):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.stop()
        teardown()


def new_root() -> Path:
    """A temp folder for one run (each host's files under its own sub-folder)."""
    root = Path(f"/tmp/matchcast-hosts-{uuid.uuid4().hex[:8]}")
    root.mkdir(parents=True)
    root.chmod(0o755)
    return root


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
