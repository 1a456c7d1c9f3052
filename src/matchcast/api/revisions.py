"""The API's copy of the feature revisions, kept current in the background (the idempotency keys read it)."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from matchcast.api.background import BackgroundLoop
from matchcast.service.match_index import FeatureRevisions

log = logging.getLogger("matchcast.api")


class RevisionWatch(BackgroundLoop):
    """Every ``every_s``, reads the feature rows changed since the last look into ``revisions``."""

    task_name = "matchcast-revision-watch"

    def __init__(self, revisions: FeatureRevisions, every_s: float) -> None:
        self.revisions, self.every_s = revisions, every_s

    async def start(self) -> None:
        """Read every revision once, then keep them current: a process that answers before its first read would
        make other idempotency keys than the processes already serving (so a resubmission would be a new task)."""
        await self._refresh()
        await super().start()

    async def _refresh(self) -> None:
        try:
            changed = await run_in_threadpool(self.revisions.refresh)
            if changed:
                log.debug("feature_revisions_read changed=%d seq=%s", changed, self.revisions.seq)
        except Exception as exc:  # the store may be away for a while; the next tick tries again
            log.warning("could not read feature revisions (%s)", type(exc).__name__)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self._refresh()
