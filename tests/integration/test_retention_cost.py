"""What keeping expired ids answerable (410) costs: Redis memory per 100,000 ids, on a Redis of the test's own."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from matchcast.tasks.records import TaskRecords
from tests.conftest import free_port, need

pytestmark = pytest.mark.integration
IDS = 100_000


@pytest.fixture
def own_redis() -> Iterator[int]:
    server = shutil.which("redis-server")
    need("redis-server (to start a Redis of the test's own)", server is not None)
    assert server is not None
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()  # a throwaway server: nothing to save
        proc.wait(10)


def test_memory_per_100k_expired_ids(own_redis: int) -> None:
    client = redis.Redis(port=own_redis)
    before = int(client.info("memory")["used_memory"])

    async def issue() -> None:
        records = TaskRecords(aioredis.Redis(port=own_redis), ttl_s=86400, gone_s=86400)
        now = time.time()
        for _ in range(IDS // 1000):
            async with records.client.pipeline(transaction=False) as pipe:
                records._tombstones(pipe, "task", [str(uuid.uuid4()) for _ in range(1000)], now)
                await pipe.execute()
        await records.client.aclose()

    asyncio.run(issue())
    used = int(client.info("memory")["used_memory"]) - before
    keys = client.dbsize()
    encodings = {client.object("encoding", k) for k in client.scan_iter(count=1000)}
    print(
        f"\n[retention] {IDS:,} tombstones in one hour: {used / 1e6:.2f} MB ({used / IDS:.1f} bytes an id), "
        f"{keys} keys, encodings {sorted(e.decode() for e in encodings)}"
    )
    assert encodings == {b"intset"}
    assert used / IDS < 16, f"{used / IDS:.1f} bytes an id"
