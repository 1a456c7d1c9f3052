"""Admission control that costs nothing per request: the depth of ``ml`` (and the dead-letter count, and each API
key's backlog on the bulk lane for ``async_backlog{key}``) sampled in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from kombu import Connection
from starlette.concurrency import run_in_threadpool

from matchcast.api.background import BackgroundLoop
from matchcast.config import Settings
from matchcast.data.dead_letters import DeadLetters
from matchcast.errors import Overloaded
from matchcast.metrics import ASYNC_BACKLOG, DEAD_LETTERS, QUEUE_DEPTH
from matchcast.service.wiring import store_for
from matchcast.tasks.celery_app import queue_depth
from matchcast.tasks.cluster import broker_connection
from matchcast.tasks.fairshare import FairShare
from matchcast.tasks.names import ML_QUEUE

log = logging.getLogger("matchcast.api")
DEAD_LETTER_SAMPLE_S = 15.0


class BacklogSampler(BackgroundLoop):
    """Samples the depth of ``ml`` in the background so that admission control costs nothing per request."""

    task_name = "matchcast-backlog-sampler"

    def __init__(self, settings: Settings, fair: FairShare | None = None) -> None:
        self.settings, self.fair = settings, fair
        self.by_key: dict[str, int] = {}  # bulk-lane backlog by API key id, as last sampled
        self.depth: int | None = None
        self.consumers: int | None = None
        self.sampled_at = 0.0
        self._conn: Connection | None = None

    def _sample(self) -> tuple[int, int | None]:
        if self._conn is None:
            self._conn = broker_connection(self.settings, timeout=2)
        try:
            return queue_depth(self.settings, self._conn)
        except Exception:
            with contextlib.suppress(Exception):
                self._conn.release()
            self._conn = None
            raise

    async def _run(self) -> None:
        dead_sampled = float("-inf")
        while True:
            if time.monotonic() - dead_sampled >= DEAD_LETTER_SAMPLE_S:
                dead_sampled = time.monotonic()
                try:  # keeps the dead-letter gauge (and its alert) current without anyone listing them
                    store = store_for(self.settings)
                    DEAD_LETTERS.set(await run_in_threadpool(DeadLetters(store).count))
                except Exception as exc:
                    log.debug("could not count dead letters: %s", exc)
            try:
                depth, self.consumers = await run_in_threadpool(self._sample)
                self.depth, self.sampled_at = depth, time.monotonic()
                QUEUE_DEPTH.set(depth)
            except Exception:
                self.depth = None
            await self._sample_keys()
            await asyncio.sleep(self.settings.backlog_sample_s)

    async def _sample_keys(self) -> None:
        """The per-key backlog gauge (``async_backlog{key}``); keys whose work is done leave it."""
        if self.fair is None:
            return
        try:
            by_key = await self.fair.backlog()
        except Exception as exc:
            log.debug("could not read the per-key backlog: %s", exc)
            return
        for gone in set(self.by_key) - set(by_key):
            with contextlib.suppress(KeyError):
                ASYNC_BACKLOG.remove(gone)
        for key, n in by_key.items():
            ASYNC_BACKLOG.labels(key=key).set(n)
        self.by_key = by_key

    async def stop(self) -> None:
        """Stop sampling and release the broker connection."""
        await super().stop()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await run_in_threadpool(self._conn.release)

    def admit(self) -> None:
        """Refuse new async work (``Overloaded``, 429) while the sampled backlog is at its limit."""
        depth = self.depth
        if depth is not None and depth >= self.settings.max_backlog:
            raise Overloaded(f"{depth} messages are waiting in {ML_QUEUE} (limit {self.settings.max_backlog})")
