"""The result backend's clients from settings: a Redis URL or Celery's sentinel:// form; the replica wait."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from matchcast.config import Settings
from matchcast.tasks.backend_client import (
    MajoritySentinel,
    ReplacedMaster,
    ReplicaWait,
    async_backend_client,
    backend_client,
    celery_backend_options,
    freshest_master,
    on_current_master,
    sentinel_address,
)
from matchcast.tasks.celery_app import make_celery


def settings(tmp_path: Path, url: str, master: str = "matchcast") -> Settings:
    broker = "amqp://guest:guest@127.0.0.1:5672//"
    return Settings(home=tmp_path, broker_url=broker, result_backend=url, result_backend_master_name=master)


SENTINELS = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2; sentinel://10.0.0.3/2"


def test_a_sentinel_url_names_every_sentinel_the_database_and_the_masters_password() -> None:
    address = sentinel_address(SENTINELS)
    assert address is not None
    assert address.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert address.master_options() == {"db": 2, "username": None, "password": "s3cret"}
    assert sentinel_address("redis://127.0.0.1:6379/0") is None
    with pytest.raises(ValueError, match="sentinel://"):
        sentinel_address("sentinel://10.0.0.1:26379/0;redis://10.0.0.2:6379/0")


def test_clients_ask_the_sentinels_for_the_named_master(tmp_path: Path) -> None:
    s = settings(tmp_path, SENTINELS, "results")
    client = backend_client(s, socket_timeout=2)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool) and pool.service_name == "results"
    assert isinstance(pool.sentinel_manager, MajoritySentinel)
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "s3cret"
    ports = [c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels]
    assert ports == [26379, 26380, 26379]
    aclient = async_backend_client(s, socket_timeout=2)
    assert isinstance(aclient.connection_pool, aiosentinel.SentinelConnectionPool)
    assert aclient.connection_pool.service_name == "results"
    plain = backend_client(settings(tmp_path, "redis://127.0.0.1:6391/3"))
    options = plain.connection_pool.connection_kwargs
    assert (options["port"], options["db"]) == (6391, 3)


def test_celery_gets_the_master_name_with_sentinels_only(tmp_path: Path) -> None:
    url = "sentinel://10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2"  # Celery wants every port, and no spaces
    s = settings(tmp_path, url, "results")
    assert celery_backend_options(s)["master_name"] == "results"
    assert celery_backend_options(settings(tmp_path, "redis://127.0.0.1:6379/0")) == {}
    app = make_celery(s)
    assert type(app.backend).__name__ == "SentinelBackend"
    assert isinstance(app.backend._get_sentinel_instance(**app.backend.connparams), MajoritySentinel)
    assert app.conf.result_backend_transport_options["master_name"] == "results"


class Pipe:
    """Records the commands queued on it, answers WAIT with ``acked``."""

    def __init__(self, acked: int) -> None:
        self.acked, self.commands = acked, []  # type: ignore[var-annotated]

    def execute_command(self, *args: object) -> None:
        self.commands.append(args)

    def execute(self) -> list[object]:
        return [True] + ([self.acked] if self.commands else [])


class Pool:
    """A Sentinel pool's view of the master: where its connections went, and where the Sentinels say it is now."""

    def __init__(self, before: tuple[str, int], now: tuple[str, int]) -> None:
        self.master_address, self.now = before, now

    def get_master_address(self) -> tuple[str, int]:
        self.master_address = self.now
        return self.now


def test_a_short_wait_on_a_replaced_master_refuses_the_write_and_does_not_pause() -> None:
    wait = ReplicaWait(1, 50)
    stale = Pipe(0)
    stale.connection_pool = Pool(("10.0.0.1", 6379), ("10.0.0.2", 6379))  # type: ignore[attr-defined]
    with pytest.raises(ReplacedMaster, match=re.escape("10.0.0.1:6379")):
        wait.execute(stale)
    assert wait.paused_until == 0.0  # the next write waits (and checks) again
    alone = Pipe(0)
    alone.connection_pool = Pool(("10.0.0.2", 6379), ("10.0.0.2", 6379))  # type: ignore[attr-defined]
    wait.execute(alone)  # the master it wrote to is the current one, without a replica: done, and a pause
    assert wait.paused_until > 0


def sentinel_state(ip: str, epoch: int, flags: str = "master") -> dict[str, object]:
    """A master's state as redis-py parses ``SENTINEL MASTERS`` (with its derived flags)."""
    named = set(flags.split(","))
    return {
        "ip": ip, "port": 6379, "config-epoch": epoch, "flags": flags, "num-other-sentinels": 2,
        "is_master": "master" in named, "is_sdown": "s_down" in named, "is_odown": "o_down" in named,
    }  # fmt: skip


def test_the_master_of_the_highest_epoch_among_the_answers_is_taken() -> None:
    def valid(state: dict[str, object], _: str) -> bool:
        return "down" not in str(state["flags"])

    # A Sentinel back from a partition names the old master (epoch 0) until it hears of the failover (epoch 1).
    answers = [sentinel_state("10.0.0.1", 0), sentinel_state("10.0.0.2", 1)]
    assert freshest_master(answers, "m", valid, []) == ("10.0.0.2", 6379)
    assert freshest_master([None, sentinel_state("10.0.0.1", 3)], "m", valid, []) == ("10.0.0.1", 6379)
    with pytest.raises(redis.sentinel.MasterNotFoundError, match="s2 - timeout"):
        freshest_master([sentinel_state("10.0.0.1", 4, "master,s_down")], "m", valid, ["s2 - timeout"])


def test_replica_wait_is_queued_last_counted_when_short_then_paused() -> None:
    assert ReplicaWait(0, 100).execute(Pipe(0)) == [True]  # no replicas asked: no WAIT
    wait = ReplicaWait(1, 50)
    pipe = Pipe(1)
    assert wait.execute(pipe) == [True, 1] and pipe.commands == [("WAIT", 1, 50)]
    assert wait.paused_until == 0.0
    short = Pipe(0)
    wait.execute(short)
    assert short.commands and wait.paused_until > 0  # short: the next writes do not wait
    later = Pipe(1)
    wait.execute(later)
    assert later.commands == []


def test_a_subscription_is_on_the_current_master_without_sentinels_or_when_none_answers(tmp_path: Path) -> None:
    class Conn:
        host, port = "127.0.0.1", 6379

    async def check() -> list[bool]:
        plain = async_backend_client(settings(tmp_path, "redis://127.0.0.1:6379/0"))
        unreachable = async_backend_client(settings(tmp_path, "sentinel://127.0.0.1:1/0"), socket_connect_timeout=0.5)
        # no Sentinel answers: the subscription that works is kept
        return [await on_current_master(c, conn) for c in (plain, unreachable) for conn in (Conn(), None)]

    assert asyncio.run(check()) == [True, True, True, True]


class FakeSentinel:
    """A Sentinel's answer to ``SENTINEL MASTERS`` (None: its host is cut off), and how often it was asked."""

    def __init__(self, name: str, state: dict[str, object] | None) -> None:
        self.name, self.state, self.asked = name, state, 0

    def sentinel_masters(self) -> dict[str, object]:
        self.asked += 1
        if self.state is None:
            raise redis.ConnectionError(f"{self.name} unreachable")
        return {"m": self.state}


def test_a_majority_of_the_sentinels_is_asked_and_one_that_does_not_answer_goes_last() -> None:
    stale = FakeSentinel("s1", sentinel_state("10.0.0.1", 0))  # back from the partition, behind by one failover
    fresh = FakeSentinel("s2", sentinel_state("10.0.0.2", 1))
    cut = FakeSentinel("s3", None)
    spare = FakeSentinel("s4", sentinel_state("10.0.0.2", 1))
    five = FakeSentinel("s5", sentinel_state("10.0.0.2", 1))
    sentinel = MajoritySentinel([("127.0.0.1", 1)])
    sentinel.sentinels = [stale, cut, fresh, spare, five]  # type: ignore[list-item]
    assert sentinel.discover_master("m") == ("10.0.0.2", 6379)  # three of five answered: the highest epoch wins
    assert (stale.asked, cut.asked, fresh.asked, spare.asked, five.asked) == (1, 1, 1, 1, 0)
    assert sentinel.sentinels == [stale, fresh, spare, cut, five]  # type: ignore[comparison-overlap]
