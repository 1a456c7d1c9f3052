"""A loop an API process runs in the background from its start to its shutdown."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundLoop:
    """Runs ``_run`` as one background task between ``start`` and ``stop``."""

    task_name = "matchcast-background"
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop the loop and wait until it has."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
