"""Worker heartbeats in the result backend's Redis: each worker refreshes its key; a stopped one expires."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from matchcast.tasks.keys import WORKER_KEY


class WorkerHeartbeat:
    """A worker announces itself every few seconds; the key expires if it stops."""

    def __init__(self, client: redis.Redis, hostname: str, interval_s: float) -> None:
        self.client = client
        self.key, self.interval_s = WORKER_KEY + hostname, interval_s
        self.hostname = hostname

    def beat(self, info: dict[str, Any]) -> None:
        """Refresh this worker's key."""
        body = {"hostname": self.hostname, "at": time.time(), **info}
        self.client.set(self.key, json.dumps(body), ex=max(2, round(self.interval_s * 3)))

    def clear(self) -> None:
        """Remove this worker's key (clean shutdown)."""
        self.client.delete(self.key)


async def live_workers(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Workers whose heartbeat has not expired."""
    keys = [k async for k in client.scan_iter(match=WORKER_KEY + "*", count=100)]
    if not keys:
        return []
    values = await client.mget(keys)
    return [json.loads(v) for v in values if v]
