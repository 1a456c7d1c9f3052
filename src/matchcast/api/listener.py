"""One Redis listener per API process: it hears Celery's result messages and wakes the callers waiting on them,
and tells the event hub (``api/events.py``) which tasks and batches changed, for the event streams it serves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from matchcast.api.background import BackgroundLoop
from matchcast.tasks.backend_client import on_current_master
from matchcast.tasks.keys import EVENTS_CHANNEL, RESULT_KEY
from matchcast.tasks.status import READY_STATES

log = logging.getLogger("matchcast.api")
MASTER_CHECK_S = 2.0  # how often the listener checks that it is subscribed on the current master (Sentinels)


class ResultListener(BackgroundLoop):
    """Pattern-subscribes once to Celery's result channels and wakes the waiters of finished tasks."""

    task_name = "matchcast-result-listener"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # The event hub: whether anyone watches (checked before decoding a notice), the ids that changed, and
        # a reconnect (notices may have been missed meanwhile).
        self.watched: Callable[[], bool] = lambda: False
        self.changed: Callable[[list[str]], None] = lambda ids: None
        self.reconnected: Callable[[], None] = lambda: None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(RESULT_KEY + "*")
                await pubsub.subscribe(EVENTS_CHANNEL)
                self.reconnected()
                await self._catch_up()
                checked = loop.time()
                while True:
                    if loop.time() - checked > MASTER_CHECK_S:
                        checked = loop.time()
                        if not await on_current_master(self.client, pubsub.connection):
                            raise ConnectionError("the master moved (failover): subscribing on the new one")
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg.get("type") == "message":  # a notice on EVENTS_CHANNEL
                        if self.watched():
                            notice = json.loads(msg["data"])
                            self.changed([*notice.get("tasks", ()), *([notice["batch"]] if "batch" in notice else [])])
                        continue
                    if msg.get("type") != "pmessage":
                        continue
                    channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    task_id = channel.removeprefix(RESULT_KEY)
                    if self.watched():
                        self.changed([task_id])
                    fut = self.waiters.get(task_id)
                    if fut is None or fut.done():
                        continue
                    meta = json.loads(msg["data"])
                    if meta.get("status") in READY_STATES:
                        fut.set_result(meta)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:  # reconnect after a backend outage, then catch up on the waiters
                log.warning("result listener lost the backend (%s); reconnecting", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.5)

    async def _catch_up(self) -> None:
        """Resolve the waiters whose result came while the listener was away (a backend restart or failover: its
        message went to nobody), reading their records in one round trip; the rest keep waiting."""
        pending = [t for t, fut in self.waiters.items() if not fut.done()]
        if not pending:
            return
        raws = await self.client.mget([RESULT_KEY + t for t in pending])
        for task_id, raw in zip(pending, raws, strict=True):
            fut = self.waiters.get(task_id)
            meta = json.loads(raw) if raw else None
            if fut is not None and not fut.done() and meta and meta.get("status") in READY_STATES:
                fut.set_result(meta)

    def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """Register interest in a task (before it is sent, or before its state is read)."""
        fut = self.waiters.get(task_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[task_id] = fut
        return fut

    def forget(self, task_id: str) -> None:
        """Drop interest in a task."""
        self.waiters.pop(task_id, None)
