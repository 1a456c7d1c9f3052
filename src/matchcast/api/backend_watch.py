"""Watching the result backend's data: did it come back empty, does it keep an append-only file, has it the
replicas that writes wait for?

Task records, idempotency keys, cancel markers and callbacks live in the result backend. With an append-only
file they survive its restart; without one, or when the backend is replaced, they are gone. A marker key
without TTL (``matchcast:backend``, an epoch) tells the two apart: when it vanishes, the backend came back
empty. Both facts go to ``/ready`` (degraded, not failing: the backend works, it has forgotten) and to metrics
with alerts (``deploy/prometheus/alerts.yml``). A failover to a replica that has the data keeps the marker (the
epoch stays); a master short of the replicas that writes wait for (``MATCHCAST_RESULT_BACKEND_WAIT_REPLICAS``, e.g.
alone after a failover) is degraded too: losing it now would lose what it acknowledged since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from matchcast.api.background import BackgroundLoop
from matchcast.errors import MatchcastError
from matchcast.metrics import RESULT_BACKEND_PERSISTENT, RESULT_BACKEND_REPLICAS, RESULT_BACKEND_RESETS
from matchcast.tasks.records import TaskRecords

log = logging.getLogger("matchcast.api")
WATCH_S = 2.0


class BackendWatch(BackgroundLoop):
    """Checks the backend's epoch marker and persistence every ``interval_s`` seconds."""

    task_name = "matchcast-backend-watch"

    def __init__(self, records: TaskRecords, interval_s: float = WATCH_S) -> None:
        self.records, self.interval_s = records, interval_s
        self.epoch: str | None = None
        self.lost_at: float | None = None
        self.persistent: bool | None = None
        self.replicas: int | None = None

    async def check(self) -> None:
        """Read (or create) the epoch marker; a different epoch than last time means the data was lost."""
        epoch = await self.records.backend_epoch()
        if self.epoch is not None and epoch != self.epoch:
            self.lost_at = time.time()
            RESULT_BACKEND_RESETS.inc()
            log.error(
                "result_backend_came_back_empty epoch=%s previous=%s: task records, idempotency keys, cancels and "
                "callbacks written before are gone",
                epoch,
                self.epoch,
            )
        self.epoch = epoch
        self.persistent, self.replicas = await self.records.durability()
        RESULT_BACKEND_PERSISTENT.set(1 if self.persistent else 0)
        RESULT_BACKEND_REPLICAS.set(self.replicas)

    def degraded(self) -> dict[str, str]:
        """What ``/ready`` reports as degraded (working, but less than promised)."""
        out: dict[str, str] = {}
        notes = []
        if self.lost_at is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.lost_at))
            notes.append(
                f"came back empty at {when}: task records, idempotency keys, cancels and callbacks from before are lost"
            )
        if self.persistent is False:
            notes.append("keeps no append-only file (appendonly no): a restart would forget every accepted task")
        wanted = self.records.wait.replicas
        if self.replicas is not None and self.replicas < wanted:
            notes.append(f"{self.replicas} of {wanted} replicas connected: a failover now would lose recent writes")
        if notes:
            out["result_backend"] = "; ".join(notes)
        return out

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(MatchcastError):  # an unreachable backend is /ready's result_backend check
                await self.check()
            await asyncio.sleep(self.interval_s)
