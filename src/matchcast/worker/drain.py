"""Draining a worker told to stop: finish or hand back what it holds, within ``MATCHCAST_WORKER_SHUTDOWN_GRACE_S``.

SIGTERM (what systemd, Docker and Kubernetes send on scale-down) starts Celery's warm shutdown: the worker stops
consuming, lets the tasks already running finish and acknowledges them; the messages it had reserved (prefetched,
not started) were never acknowledged, so the broker hands them to another worker as soon as the channel closes.
Tasks are acknowledged late, so nothing is acknowledged before its result is stored.

A warm shutdown alone waits for a running task however long it takes. The grace period bounds it: if the worker is
still shutting down ``grace`` seconds after SIGTERM, the watchdog sends it SIGQUIT, Celery's cold shutdown, which
cancels the tasks still running (unacknowledged, so the broker redelivers them: none is lost; a chunk cut off half
stored is predicted again whole and its results written again under the same task ids, so nothing counts twice).
Should even that hang, the process exits ``BACKSTOP_S`` later with its pool children; the broker still holds
every unacknowledged message.

Why not Celery's own soft shutdown (``worker_soft_shutdown_timeout`` with ``REMAP_SIGTERM=SIGQUIT``): it sleeps the
whole timeout inside the signal handler whenever a task is active, so every scale-down under load takes the full
grace period, and tasks that finished during the sleep are not yet acknowledged (the event loop that would
acknowledge them is the one asleep), so they are cancelled and run again elsewhere. The watchdog keeps the warm
shutdown's promptness (a drain under load takes about a second here) and Celery's cold shutdown as the bound.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

log = logging.getLogger("matchcast.worker.drain")
BACKSTOP_S = 10.0  # after the cold shutdown was asked for, how long before the process exits regardless


class DrainWatchdog:
    """Bounds a warm shutdown: SIGQUIT after ``grace_s``, exit ``BACKSTOP_S`` after that."""

    def __init__(self, grace_s: float, pid: int | None = None) -> None:
        self.grace_s, self.pid = grace_s, pid or os.getpid()
        self.started: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Called when the warm shutdown begins (idempotent: a second SIGTERM changes nothing)."""
        with self._lock:
            if self.started is not None:
                return
            self.started = time.monotonic()
        log.warning("drain_started pid=%d grace_s=%.1f", self.pid, self.grace_s)
        threading.Thread(target=self._watch, name="matchcast-drain", daemon=True).start()

    def _watch(self) -> None:
        time.sleep(self.grace_s)
        log.warning("drain_grace_over pid=%d: cold shutdown, running tasks go back to the broker", self.pid)
        os.kill(self.pid, signal.SIGQUIT)
        time.sleep(BACKSTOP_S)
        log.error("drain_backstop pid=%d: exiting with unacknowledged messages left to the broker", self.pid)
        _kill_pool_children()
        os._exit(1)


def _kill_pool_children() -> None:
    from billiard.process import active_children

    for child in active_children():
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(child.pid, signal.SIGKILL)
