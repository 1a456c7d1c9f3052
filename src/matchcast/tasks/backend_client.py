"""Clients of the result backend's Redis, built from the settings in this one place.

``MATCHCAST_RESULT_BACKEND`` is a Redis URL (``redis://host:port/db``: one server) or, for a backend that
survives losing its host, Celery's Sentinel form: ``sentinel://host:port/db;sentinel://host:port/db;...`` (one
entry per Sentinel, a password as in ``sentinel://:secret@host:port/db`` is the master's) with the master's name
in ``MATCHCAST_RESULT_BACKEND_MASTER_NAME``. Every client of matchcast (Celery's result backend in workers and the
API, the API's records, listener and event streams, workers' records and heartbeat, dead-letter replay) is made
here: with Sentinels it asks them for the current master before each new connection, and a connection that finds
the old master gone or demoted is dropped and made again (redis-py's ``master_for``).

A Sentinel that was cut off with its master still names it when it comes back, until it hears of the failover
it missed; so does that old master, for the seconds before the others demote it. redis-py takes the first
Sentinel that answers: a client asking the stale one would write to the old master, and lose it all when the
master is demoted. ``MajoritySentinel`` asks Sentinels until a majority has answered and takes the master of the
highest configuration epoch among them (any majority holds one that knows the latest failover). And a write whose
``WAIT`` came short asks again: if the master has changed since its connection was made, the write is refused
(``ReplacedMaster``) rather than counted done on a master that is about to forget it.

Replication between master and replica is asynchronous: a write the master acknowledged may be lost when it dies.
``ReplicaWait`` closes that window for the writes that a failover must not lose (an accepted task's record, a
result): ``WAIT`` is queued at the end of the write's own pipeline (no extra round trip), so the write counts only
once ``MATCHCAST_RESULT_BACKEND_WAIT_REPLICAS`` replicas have it, or ``MATCHCAST_RESULT_BACKEND_WAIT_MS`` passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from matchcast.config import Settings
from matchcast.metrics import RESULT_BACKEND_UNREPLICATED

SENTINEL_PORT = 26379
WAIT_PAUSE_S = 5.0  # after a WAIT that came short (no replica connected), writes go unwaited this long


class ReplacedMaster(redis.ConnectionError):
    """A write went to a master the Sentinels no longer name: it may be lost, so it is not done."""


@dataclass
class MasterAnswers:
    """What the Sentinels asked so far said (``SENTINEL MASTERS``), until a majority has answered."""

    sentinels: list[Any]
    states: list[dict[str, Any] | None] = field(default_factory=list)
    answered: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, sentinel: Any, masters: dict[str, Any] | None, service_name: str) -> bool:
        """Note an answer (None: the Sentinel could not be reached); whether a majority has now answered."""
        if masters is not None:
            self.answered.append(sentinel)
            self.states.append(masters.get(service_name))
        return len(self.answered) >= len(self.sentinels) // 2 + 1

    def failed(self, sentinel: Any, exc: Exception) -> None:
        self.errors.append(f"{sentinel} - {exc!r}")

    def order(self) -> list[Any]:
        """The Sentinels, those that answered first (one that does not answer is asked last from now on)."""
        return self.answered + [s for s in self.sentinels if s not in self.answered]

    def master(self, service_name: str, valid: Any) -> tuple[str, int]:
        """The master named with the highest epoch among the valid answers."""
        return freshest_master(self.states, service_name, valid, self.errors)


def freshest_master(
    states: list[dict[str, Any] | None], service_name: str, valid: Any, errors: list[str]
) -> tuple[str, int]:
    """The master that the Sentinels' answers (``SENTINEL MASTERS`` states) name with the highest epoch."""
    usable = [state for state in states if state and valid(state, service_name)]
    if not usable:
        error_info = f": {', '.join(errors)}" if errors else ""
        raise redis.sentinel.MasterNotFoundError(f"No master found for {service_name!r}{error_info}")
    best = max(usable, key=lambda state: int(state.get("config-epoch", 0)))
    return str(best["ip"]), int(best["port"])


class MajoritySentinel(redis.sentinel.Sentinel):
    """Sentinels asked until a majority answered: the master of the highest epoch among them (module doc)."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = MasterAnswers(list(self.sentinels))
        for sentinel in answers.sentinels:
            try:
                if answers.add(sentinel, sentinel.sentinel_masters(), service_name):
                    break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                answers.failed(sentinel, exc)
        self.sentinels = answers.order()
        return answers.master(service_name, self.check_master_state)


class AsyncMajoritySentinel(aiosentinel.Sentinel):
    """``MajoritySentinel`` for asyncio clients."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = MasterAnswers(list(self.sentinels))
        for sentinel in answers.sentinels:
            try:
                if answers.add(sentinel, await sentinel.sentinel_masters(), service_name):
                    break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                answers.failed(sentinel, exc)
        self.sentinels = answers.order()
        return answers.master(service_name, self.check_master_state)


CELERY_SENTINEL = SimpleNamespace(Sentinel=MajoritySentinel)  # what Celery's SentinelBackend builds its client with


@dataclass(frozen=True)
class SentinelAddress:
    """Where the Sentinels are and what to ask the master for (database, credentials)."""

    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None

    def master_options(self) -> dict[str, Any]:
        """Connection options of the master that the URL carries."""
        return {"db": self.db, "username": self.username, "password": self.password}


def sentinel_address(url: str) -> SentinelAddress | None:
    """The Sentinels of a ``sentinel://...;sentinel://...`` URL (None for any other URL)."""
    if not url.startswith("sentinel://"):
        return None
    parts = [urlsplit(chunk.strip()) for chunk in url.split(";") if chunk.strip()]
    if any(p.scheme != "sentinel" for p in parts):
        raise ValueError("every entry of a sentinel result backend URL starts with sentinel://")
    first = parts[0]
    path = first.path.strip("/")
    return SentinelAddress(
        sentinels=tuple((p.hostname or "127.0.0.1", p.port or SENTINEL_PORT) for p in parts),
        db=int(path) if path else 0,
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
    )


def _sentinel_options(options: dict[str, Any], retry: Any) -> dict[str, Any]:
    """Options of the connections to the Sentinels themselves: the same socket timeouts, and no retry.

    The next Sentinel is the retry: redis-py's default (10 retries with backoff) would spend 10 to 20 s on a
    Sentinel whose host is cut off (each try waiting out its connect timeout) before asking the next one.
    """
    timeouts = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
    return {**timeouts, "retry": retry}


def backend_client(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking client of the result backend (its current master, with Sentinels)."""
    url = settings.resolved_result_backend()
    address = sentinel_address(url)
    if address is None:
        return redis.Redis.from_url(url, **options)
    sentinel = MajoritySentinel(address.sentinels, sentinel_kwargs=_sentinel_options(options, Retry(NoBackoff(), 0)))
    client: redis.Redis = sentinel.master_for(
        settings.result_backend_master_name, redis_class=redis.Redis, **address.master_options(), **options
    )
    return client


def async_backend_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of the result backend (its current master, with Sentinels).

    A command (a pipeline too) that meets a closed connection is sent once more on a new one: after the backend
    restarted, the pool still holds connections to the process that is gone, and without it the first request on
    each would fail (redis-py's clients made from a URL retry nothing). Only connection errors, at once: a timeout
    (a host cut off) is not sent again, so it costs its socket timeout once. (The blocking client needs none:
    redis-py's blocking pool checks a connection as it hands it out and reconnects a closed one.)
    """
    options.setdefault("retry", AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
    url = settings.resolved_result_backend()
    address = sentinel_address(url)
    if address is None:
        return aioredis.Redis.from_url(url, **options)
    no_retry = AsyncRetry(NoBackoff(), 0)
    sentinel = AsyncMajoritySentinel(address.sentinels, sentinel_kwargs=_sentinel_options(options, no_retry))
    client: aioredis.Redis = sentinel.master_for(
        settings.result_backend_master_name, redis_class=aioredis.Redis, **address.master_options(), **options
    )
    return client


async def on_current_master(client: aioredis.Redis, connection: Any) -> bool:
    """Whether ``connection`` (a pub/sub's, say) still talks to the master the Sentinels name (always, without them).

    A failover that demotes a live master (planned, or a partition healed) leaves a subscribed connection on it
    with no error: it only stops hearing what is published on the new master. Commands find out (a write to a
    replica fails); a subscriber has to ask.
    """
    locate = getattr(client.connection_pool, "get_master_address", None)
    if locate is None or connection is None or not getattr(connection, "host", None):
        return True
    try:
        host, port = await locate()
    except redis.RedisError:  # no Sentinel answers (or names a master): keep what works rather than drop it
        return True
    return (str(connection.host), int(connection.port)) == (str(host), int(port))


def celery_backend_options(settings: Settings) -> dict[str, Any]:
    """What Celery's result backend needs beyond the URL: the master's name for ``sentinel://``."""
    if sentinel_address(settings.resolved_result_backend()) is None:
        return {}
    return {
        "master_name": settings.result_backend_master_name,
        "sentinel_kwargs": _sentinel_options({"socket_timeout": 2, "socket_connect_timeout": 2}, Retry(NoBackoff(), 0)),
    }


class ReplicaWait:
    """``WAIT`` at the end of a write's pipeline, for writes a failover must not lose.

    A WAIT that comes short (fewer replicas than asked within the timeout) is counted in
    ``result_backend_unreplicated_writes_total``, and the Sentinels are asked where the master is: if it has moved
    since the connection was made (a stale master, after a partition heals), the write is refused
    (``ReplacedMaster``); if not (a failover left the new master alone, say), writes go unwaited for
    ``WAIT_PAUSE_S`` rather than each paying the timeout.
    """

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        self.replicas, self.timeout_ms = replicas, timeout_ms
        self.paused_until = 0.0

    @classmethod
    def of(cls, settings: Settings) -> ReplicaWait:
        """The wait these settings ask for (none with ``MATCHCAST_RESULT_BACKEND_WAIT_REPLICAS`` 0)."""
        return cls(settings.result_backend_wait_replicas, settings.result_backend_wait_ms)

    def queue(self, pipe: Any) -> bool:
        """Queue ``WAIT`` as the pipeline's last command if one is due; whether it was."""
        if not self.replicas or time.monotonic() < self.paused_until:
            return False
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return True

    def execute(self, pipe: Any) -> list[Any]:
        """Run a blocking pipeline, with ``WAIT`` last if one is due; its answers."""
        waited = self.queue(pipe)
        answers: list[Any] = pipe.execute()
        if waited and not self.check(answers[-1]):
            pool = getattr(pipe, "connection_pool", None)
            before, locate = getattr(pool, "master_address", None), getattr(pool, "get_master_address", None)
            self.settle(before, locate() if locate else None)
        return answers

    async def execute_async(self, pipe: Any) -> list[Any]:
        """Run an asyncio pipeline, with ``WAIT`` last if one is due; its answers."""
        waited = self.queue(pipe)
        answers: list[Any] = await pipe.execute()
        if waited and not self.check(answers[-1]):
            pool = getattr(pipe, "connection_pool", None)
            before, locate = getattr(pool, "master_address", None), getattr(pool, "get_master_address", None)
            self.settle(before, await locate() if locate else None)
        return answers

    def check(self, acked: Any) -> bool:
        """Whether enough replicas had the write (the WAIT's answer); a short one is counted."""
        if int(acked) >= self.replicas:
            return True
        RESULT_BACKEND_UNREPLICATED.inc()
        return False

    def settle(self, before: Any, now: Any) -> None:
        """After a short WAIT: refuse the write if the master moved from ``before`` to ``now``, else pause."""
        if before is not None and now is not None and tuple(before) != tuple(now):
            raise ReplacedMaster(f"the write went to {before[0]}:{before[1]}, which is no longer the master")
        self.paused_until = time.monotonic() + WAIT_PAUSE_S
