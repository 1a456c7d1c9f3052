"""Shared fixtures: real services when present; skip (or fail under MATCHCAST_REQUIRE_SERVICES=1) when not."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from matchcast.config import Settings, settings_env

if TYPE_CHECKING:
    from matchcast.data.store import MatchStore

REQUIRE = os.environ.get("MATCHCAST_REQUIRE_SERVICES") == "1"
RABBIT = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
AS_OF = date(2026, 4, 1)


def reachable(host: str, port: int) -> bool:
    """A TCP connection can be made."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need(service: str, ok: bool) -> None:
    """Skip when a service is missing, or fail when services are required."""
    if ok:
        return
    if REQUIRE:
        pytest.fail(f"{service} is required (MATCHCAST_REQUIRE_SERVICES=1) but not reachable")
    pytest.skip(f"{service} is not reachable")  # under MATCHCAST_REQUIRE_SERVICES=1 this fails instead (above)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test session's own (so runs never share the ``ml`` queue)."""
    need("RabbitMQ on 127.0.0.1:5672", reachable(*RABBIT))
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        yield "/"
        return
    vhost = f"matchcast-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True, capture_output=True, timeout=60
    )
    yield vhost
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60, check=False)


@pytest.fixture
def fresh_vhost_url(rabbit_vhost: str) -> Iterator[str]:
    """The broker URL of a new, empty vhost on the machine's RabbitMQ (no worker consumes it), deleted after."""
    ctl = shutil.which("rabbitmqctl")
    need("rabbitmqctl (to make a vhost of the test's own)", ctl is not None and rabbit_vhost != "/")
    assert ctl is not None
    vhost = f"matchcast-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True, capture_output=True, timeout=60
    )
    yield amqp_url(vhost)
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60, check=False)


def amqp_url(vhost: str) -> str:
    """Broker URL of a vhost on the machine's RabbitMQ."""
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost.replace('/', '%2F')}"


@contextlib.contextmanager
def _free_redis_db() -> Iterator[int]:
    """A Redis database number no other test holds (the lock key is set in it), flushed before and after."""
    need("Redis on 127.0.0.1:6379", reachable(*REDIS))
    import redis

    for db in range(15, 0, -1):
        c = redis.Redis(*REDIS, db=db)
        if c.set("matchcast:test-lock", "1", nx=True, ex=3600):
            c.flushdb()
            c.set("matchcast:test-lock", "1", ex=3600)
            try:
                yield db
            finally:
                c.flushdb()
                c.close()
            return
        c.close()
    pytest.fail("no free Redis database for the tests")


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database number of this session's own on the machine's Redis, flushed before and after."""
    with _free_redis_db() as db:
        yield db


@pytest.fixture
def own_redis_db() -> Iterator[int]:
    """A Redis database of this test's own: for a test that counts what is in it (workers' heartbeats, say), which
    the session's workers would otherwise add to."""
    with _free_redis_db() as db:
        yield db


def ingest_subset(
    settings: Settings, leagues: tuple[str, ...] = ("premier-league", "serie-a"), first_season: int = 17
) -> None:
    """Load a few recent seasons of some leagues, results held back from ``AS_OF``."""
    from matchcast.data.ingest import bundled_files
    from matchcast.service.bootstrap import ingest_files

    paths = [
        p
        for p in bundled_files()
        if p.parent.name in leagues and int(p.stem[-4:-2]) >= first_season and int(p.stem[-4:-2]) < 90
    ]
    ingest_files(settings, paths, as_of=AS_OF)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder with a small store and an MLflow registry whose champion was trained on it."""
    from matchcast.service.bootstrap import train_model

    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home)
    ingest_subset(settings)
    train_model(settings)
    return home


def base_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a home folder, every URL explicit."""
    values: dict[str, object] = {
        "home": home,
        "database_url": f"sqlite:///{home / 'matchcast.db'}",
        "mlflow_tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
        "worker_metrics_port": 0,
        "rate_limit_per_s": 0,  # functional tests are not throttled; tests/integration/test_auth.py tests limits
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def api_key(settings: Settings, role: str = "admin") -> str:
    """A new API key of ``role`` in the store these settings name (its token)."""
    from matchcast.service.auth import key_service_for

    return key_service_for(settings).create(role, name=f"tests ({role})")[1]


def key_headers(settings: Settings, role: str = "admin") -> dict[str, str]:
    """Headers that authenticate a test client: ``TestClient(app, headers=key_headers(settings))``."""
    return {"X-API-Key": api_key(settings, role)}


class ApiProcess:
    """``matchcast api`` as a process of its own (own process group, output in a log file) on a free port."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "matchcast", "api", "--port", str(self.port), *args],
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until ``GET /health`` answers 200 (fails if the process exits first)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the API did not answer within {timeout} s")

    def kill(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the whole process group (uvicorn's worker processes included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and close its log."""
        self.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()


class WorkerProcess:
    """A real ``matchcast worker`` process."""

    def __init__(self, settings: Settings, hostname: str, log: Path, concurrency: int = 2) -> None:
        self.settings, self.hostname, self.log, self.concurrency = settings, hostname, log, concurrency
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "matchcast", "worker", "--hostname", hostname, "--concurrency", str(concurrency)],
            env=settings_env(settings),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until every pool process has loaded the model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if text.count("model_loaded") >= self.concurrency and "ready." in text:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{text[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Warm shutdown, then kill if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="session")
def stack_settings(trained_home: Path, rabbit_vhost: str, redis_db: int) -> Settings:
    """Settings of the real stack: RabbitMQ vhost, Redis database, the trained home."""
    return base_settings(
        trained_home,
        broker_url=amqp_url(rabbit_vhost),
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sync_timeout_s=20,
    )


@pytest.fixture(scope="session")
def worker(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One real worker process on the stack."""
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    w = WorkerProcess(stack_settings, f"test-worker-{uuid.uuid4().hex[:6]}@localhost", log)
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def live_api(
    stack_settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """A real ``matchcast api`` process on the stack, for the tests of one module."""
    api = ApiProcess(stack_settings, tmp_path_factory.mktemp("api") / "api.log")
    try:
        api.wait_healthy()
        yield api
    finally:
        api.close()


class MatchIds:
    """Match ids as ``make up`` gives them (every bundled file as of ``AS_OF``: the ids of the README and of the
    OpenAPI examples), mapped to the same matches in the test stack, which holds a subset."""

    def __init__(self, bundled: MatchStore, stack: MatchStore) -> None:
        self.bundled, self.stack = bundled, stack

    def __call__(self, bundled_id: int) -> int:
        from sqlalchemy import select

        from matchcast.data.store import Match

        row = self.bundled.get(bundled_id)
        assert row is not None, f"no match {bundled_id} in the bundled data"
        key = (Match.league == row.league, Match.date == row.date, Match.home_team == row.home_team)
        with self.stack.session() as s:
            found = s.scalar(select(Match.match_id).where(*key, Match.away_team == row.away_team))
        assert found is not None, f"match {bundled_id} ({row}) is not in the test stack's data"
        return int(found)


@pytest.fixture(scope="session")
def match_ids(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> MatchIds:
    """Bundled match ids to stack ids; the bundled ids come from a real ingest of every file (no features: ~4 s)."""
    from matchcast.data.ingest import bundled_files, ingest
    from matchcast.data.store import MatchStore
    from matchcast.service.wiring import store_for

    bundled = MatchStore(f"sqlite:///{tmp_path_factory.mktemp('bundled') / 'matches.db'}")
    ingest(bundled, bundled_files(), as_of=AS_OF)
    return MatchIds(bundled, store_for(stack_settings))
