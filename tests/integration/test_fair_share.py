"""Fair share between API keys on the bulk lane, and dead-lettered batch tasks in the batch's events and counts.

Real brokers (a RabbitMQ vhost of the test's own; the Redis broker, as the embedded default runs), the real
result backend and real worker processes. Key A queues a backlog before any worker runs, then key B one batch
of 100: once a worker starts, B's batch is done while most of A's backlog still waits.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from matchcast.api.app import create_app
from matchcast.config import Settings
from matchcast.service.wiring import store_for
from matchcast.tasks.batches import batch_meta
from matchcast.tasks.celery_app import make_celery
from matchcast.tasks.fairshare import FairShare, release_chunks
from matchcast.tasks.keys import FAIR_BACKLOG_KEY, FAIR_LOAD_KEY, FAIR_SHARD_KEY
from matchcast.tasks.messages import enqueue, predict_chunk
from matchcast.tasks.names import BULK_SHARD_QUEUES
from matchcast.tasks.records import TaskRecords
from tests.conftest import ApiProcess, WorkerProcess, api_key, base_settings
from tests.integration.test_events import events

pytestmark = pytest.mark.integration

A_BATCHES = 8  # of 1,000: A's backlog (80 chunks)


def key_id(token: str) -> str:
    return token.split("_")[1]  # mc_<key id>_<secret>


@pytest.fixture(params=["rabbitmq", "redis"])
def settings(request: pytest.FixtureRequest, trained_home: Path, redis_db: int) -> Iterator[Settings]:
    backend = f"redis://127.0.0.1:6379/{redis_db}"
    # RabbitMQ (a vhost of the test's own), or the embedded default's broker: Redis (lists in the backend's database)
    broker = request.getfixturevalue("fresh_vhost_url") if request.param == "rabbitmq" else backend
    yield base_settings(trained_home, broker_url=broker, result_backend=backend)


def backlog_gauge(client: TestClient, key: str) -> float | None:
    found = re.search(rf'^async_backlog\{{key="{key}"\}} (\S+)$', client.get("/metrics").text, re.M)
    return float(found.group(1)) if found else None


def wait_for(what: Any, timeout: float, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(step)
    return value


def test_a_small_batch_of_one_key_does_not_wait_for_another_keys_backlog(settings: Settings, tmp_path: Path) -> None:
    ids = [m.match_id for m in store_for(settings).all_matches()][-1000:]
    token_a, token_b = api_key(settings, "predict"), api_key(settings, "predict")
    a, b = {"X-API-Key": token_a}, {"X-API-Key": token_b}
    backend = redis.Redis.from_url(settings.resolved_result_backend())
    if settings.broker_url == settings.result_backend:  # Redis broker: start from empty lists
        backend.delete(*[f"ml.bulk.{i}" for i in range(4)], "ml.bulk", "ml")
    with TestClient(create_app(settings)) as client:
        a_batches = []
        for _ in range(A_BATCHES):
            r = client.post("/predict/async/batch", json={"match_ids": ids}, headers=a)
            assert r.status_code == 202, r.text
            a_batches.append(r.json()["status_url"])
        r = client.post("/predict/async/batch", json={"match_ids": ids[:100]}, headers=b)
        assert r.status_code == 202, r.text
        b_url = r.json()["status_url"]
        # Each key holds its own sub-queue while it has work; the backlog by key is exported.
        shards = backend.hgetall(FAIR_SHARD_KEY)
        assert shards[key_id(token_a).encode()] != shards[key_id(token_b).encode()]
        assert int(backend.hget(FAIR_BACKLOG_KEY, key_id(token_a)) or 0) == A_BATCHES * 1000
        wait_for(lambda: backlog_gauge(client, key_id(token_a)) == A_BATCHES * 1000, 10)
        wait_for(lambda: backlog_gauge(client, key_id(token_b)) == 100, 10)  # the sampler's next pass

        worker = WorkerProcess(settings, f"fair-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
        try:
            worker.wait_ready()
            b_done = wait_for(lambda: (s := client.get(b_url, headers=b).json())["status"] == "DONE" and s, 120)
            assert b_done["counts"] == {"SUCCESS": 100}
            for url in a_batches:
                wait_for(lambda u=url: client.get(u, headers=a).json()["status"] == "DONE", 180, 0.5)
            # Without fair share B's one chunk would wait behind all of A's 80: here it waited for a few. Counted
            # from the predictions' own times (a worker drains 8,000 in seconds: polling would race it).
            b_finished = max(
                datetime.fromisoformat(r["result"]["predicted_at"])
                for r in client.get(b_url, headers=b, params={"limit": 100}).json()["results"]
            )
            a_times = [
                datetime.fromisoformat(r["result"]["predicted_at"])
                for u in a_batches
                for r in client.get(u, headers=a, params={"limit": 1000}).json()["results"]
            ]
            assert len(a_times) == A_BATCHES * 1000
            a_done = sum(t <= b_finished for t in a_times)
            assert a_done <= A_BATCHES * 1000 // 2, f"A had {a_done} of {A_BATCHES * 1000} done when B finished"
            # Every share was given back: the key leaves the gauge and its shard is free again.
            wait_for(lambda: backlog_gauge(client, key_id(token_a)) is None, 10)
            assert backend.hget(FAIR_BACKLOG_KEY, key_id(token_a)) is None
            assert backend.hget(FAIR_SHARD_KEY, key_id(token_b)) is None
        finally:
            worker.stop()


def test_turned_off_batches_keep_to_ml_bulk(settings: Settings, tmp_path: Path) -> None:
    off = settings.model_copy(update={"fair_share": False})
    ids = [m.match_id for m in store_for(off).all_matches()][-150:]
    token = api_key(off, "predict")
    backend = redis.Redis.from_url(off.resolved_result_backend())
    with TestClient(create_app(off), headers={"X-API-Key": token}) as client:
        worker = WorkerProcess(off, f"plain-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
        try:
            worker.wait_ready()
            r = client.post("/predict/async/batch", json={"match_ids": ids})
            assert r.status_code == 202, r.text
            url = r.json()["status_url"]
            done = wait_for(lambda: (s := client.get(url).json())["status"] == "DONE" and s, 60)
            assert done["counts"] == {"SUCCESS": 150}
            assert backend.hget(FAIR_SHARD_KEY, key_id(token)) is None  # never given a shard
        finally:
            worker.stop()


def test_a_dead_lettered_batch_task_is_in_the_batch_events_and_counts(
    trained_home: Path, fresh_vhost_url: str, redis_db: int, tmp_path: Path
) -> None:
    backend = f"redis://127.0.0.1:6379/{redis_db}"
    settings = base_settings(trained_home, broker_url=fresh_vhost_url, result_backend=backend, sse_keepalive_s=1.0)
    ids = [m.match_id for m in store_for(settings).all_matches()][-3:]
    # A batch of three whose second chunk is poison (a match id that is no integer: the worker rejects it and it
    # is dead-lettered), recorded and sent as the API sends a batch; no worker runs yet.
    batch_id = str(uuid.uuid4())
    tasks = {m: str(uuid.uuid4()) for m in ids}
    chunks = (
        predict_chunk([(tasks[ids[0]], ids[0]), (tasks[ids[1]], ids[1])], batch=True, batch_id=batch_id),
        predict_chunk([[tasks[ids[2]], "not-a-match"]], batch=True, batch_id=batch_id),
    )
    app = make_celery(settings, publisher=True)

    async def submit() -> None:
        client = aioredis.Redis.from_url(settings.resolved_result_backend())
        records = TaskRecords(client, settings.task_ttl_s)

        async def publish() -> None:
            enqueue(app, *chunks)

        record = batch_meta(tasks, time.time(), None, None)
        await records.issue(list(tasks.values()), "batch", publish, batch=(batch_id, record))
        await client.aclose()

    asyncio.run(submit())
    app.close()
    api = ApiProcess(settings, tmp_path / "api.log")
    worker = None
    try:
        api.wait_healthy()
        http = httpx.Client(base_url=api.base, headers={"X-API-Key": api_key(settings, "predict")}, timeout=60)
        url = f"/monitoring/batch_status/{batch_id}"
        with http.stream("GET", f"{url}/events") as response:
            stream = events(response)
            first = next(stream)
            assert first["data"]["kind"] == "snapshot" and first["data"]["done"] == 0
            worker = WorkerProcess(settings, f"dead-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
            seen, deadline = [first], time.monotonic() + 90
            while seen[-1]["event"] != "end":  # without its dead letter named, the stream would never end
                assert time.monotonic() < deadline, seen
                event = next(stream)
                if "comment" not in event:
                    seen.append(event)
        assert seen[-1]["data"]["counts"] == {"SUCCESS": 2, "DEAD_LETTERED": 1}, seen
        named = {t["task_id"]: t["status"] for e in seen[1:-1] for t in e["data"]["tasks"]}
        assert named == {tasks[ids[0]]: "SUCCESS", tasks[ids[1]]: "SUCCESS", tasks[ids[2]]: "DEAD_LETTERED"}
        status = http.get(url).json()
        assert status["status"] == "DONE" and status["counts"] == {"SUCCESS": 2, "DEAD_LETTERED": 1}
        assert [f["task_id"] for f in status["failures"]] == [tasks[ids[2]]]
        assert status["failures"][0]["status"] == "DEAD_LETTERED"
    finally:
        if worker is not None:
            worker.stop()
        api.close()


def test_a_key_keeps_its_shard_while_it_has_work_new_keys_get_the_least_loaded_and_shares_release_once(
    redis_db: int,
) -> None:
    url = f"redis://127.0.0.1:6379/{redis_db}"
    sync = redis.Redis.from_url(url)
    sync.delete(FAIR_BACKLOG_KEY, FAIR_SHARD_KEY, FAIR_LOAD_KEY)  # no other test's work in the shards
    a, b, c, d, e = (f"key-{uuid.uuid4().hex[:6]}" for _ in range(5))

    async def scenario() -> dict[str, str]:
        client = aioredis.Redis.from_url(url)
        fair = FairShare(client, 600)
        try:
            got = {a: await fair.assign(a, [("a1", 100), ("a2", 100)])}
            got[b] = await fair.assign(b, [("b1", 50)])
            assert await fair.assign(a, [("a3", 10)]) == got[a]  # A still has work: the same shard
            # The same call again (a retry after its answer was lost): the same shard, counted once
            assert await fair.assign(a, [("a3", 10)]) == got[a]
            got[c] = await fair.assign(c, [("c1", 30)])
            got[d] = await fair.assign(d, [("d1", 40)])
            got[e] = await fair.assign(e, [("e1", 5)])  # all four taken: the least loaded (C's, 30)
            assert await fair.assign(b, [("b1", 50)]) == got[b]  # again: not a new shard, not a second share
            assert await fair.backlog() == {a: 210, b: 50, c: 30, d: 40, e: 5}
            return got
        finally:
            await client.aclose()

    got = asyncio.run(scenario())
    assert len({got[a], got[b], got[c], got[d]}) == 4 and got[e] == got[c]
    assert all(q in BULK_SHARD_QUEUES for q in got.values())
    assert release_chunks(sync, ["b1"]) == 50 and release_chunks(sync, ["b1"]) == 0  # a redelivery: nothing twice
    assert sync.hget(FAIR_BACKLOG_KEY, b) is None and sync.hget(FAIR_SHARD_KEY, b) is None
    assert release_chunks(sync, ["a1", "a2", "a3", "c1", "d1", "e1"]) == 285
    assert sync.hgetall(FAIR_BACKLOG_KEY) == {} and sync.hgetall(FAIR_LOAD_KEY) == {}
