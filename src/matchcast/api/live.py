"""The loop that keeps the live gauges current (``MATCHCAST_LIVE_REFRESH_S``), so the alerts need nobody to call
``GET /monitoring/live``."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from matchcast.api.background import BackgroundLoop
from matchcast.service.live import LiveScoresService

log = logging.getLogger("matchcast.api")


class LiveGauges(BackgroundLoop):
    """Recomputes the live figures (and so their gauges) every ``MATCHCAST_LIVE_REFRESH_S``."""

    task_name = "matchcast-live-gauges"

    def __init__(self, service: LiveScoresService, every_s: float) -> None:
        self.service, self.every_s = service, every_s

    async def _run(self) -> None:
        while True:
            try:
                await run_in_threadpool(self.service.report)
            except Exception as exc:
                log.warning("could not compute the live scores: %s", exc)
            await asyncio.sleep(self.every_s)
