"""The worker's Celery app, built from settings by ``create_app``; ``PredictionService`` once per pool process.

Nothing is read at import time: ``matchcast worker`` builds the app from its settings (the lane among them),
and ``matchcast.worker.entry`` builds one from the environment for the ``celery`` command line (Flower).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery, signals

from matchcast.config import CHALLENGER_ALIAS, Settings
from matchcast.metrics import MODEL_LOADS
from matchcast.service.prediction import PredictionService
from matchcast.service.prediction_log import PredictionLogWriter, ServedLog
from matchcast.service.shadow import Shadow
from matchcast.service.wiring import registry_for, store_for
from matchcast.tasks.backend_client import ReplicaWait, backend_client
from matchcast.tasks.celery_app import declare_topology, make_celery
from matchcast.tasks.heartbeat import WorkerHeartbeat
from matchcast.tasks.names import LANES, MAINTENANCE_QUEUE
from matchcast.tasks.records import WorkerRecords

log = logging.getLogger("matchcast.worker")


class WorkerRuntime:
    """What a worker process holds: its settings and app, the task records, and (per pool process) the service."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self._service: PredictionService | None = None
        self._records: WorkerRecords | None = None
        self.heartbeat_stop = threading.Event()
        self.collector: Any = None
        self.drain: Any = None  # the watchdog that bounds a warm shutdown, once SIGTERM came

    @property
    def records(self) -> WorkerRecords:
        """The task records, through the result backend's client."""
        if self._records is None:
            wait = ReplicaWait.of(self.settings)
            self._records = WorkerRecords(self.app.backend.client, self.settings.task_ttl_s, wait)
        return self._records

    def service(self) -> PredictionService:
        """This process's service, switched to a new champion within ``MATCHCAST_MODEL_REFRESH_S`` of its promotion.

        Created here only if the pool sent no ``worker_process_init``.
        """
        if self._service is None:
            self.init_service()
        assert self._service is not None
        switched = self._service.refresh(self.settings.model_refresh_s)
        if switched is not None:
            MODEL_LOADS.labels(version=switched.version).inc()
        return self._service

    def init_service(self) -> None:
        """Load the champion for this process."""
        started = time.perf_counter()
        s = self.settings
        served_log = self.served_log()
        self._service = PredictionService(
            store_for(s), registry_for(s), s.model_alias, markets=s.markets, served_log=served_log
        )
        if served_log is not None:  # after the champion's load: the thread's first shadow lookup imports MLflow too
            served_log.writer.start()
        MODEL_LOADS.labels(version=self._service.model.version).inc()
        log.info(
            "model_loaded pid=%d name=%s version=%s alias=%s seconds=%.3f",
            os.getpid(),
            self._service.model.name,
            self._service.model.version,
            s.model_alias,
            time.perf_counter() - started,
        )

    def served_log(self) -> ServedLog | None:
        """This process's prediction log writer (its thread not started yet) and shadow, as the settings ask."""
        s = self.settings
        if not s.prediction_log:
            return None
        shadow = Shadow(registry_for(s), CHALLENGER_ALIAS, s.model_refresh_s) if s.shadow else None
        writer = PredictionLogWriter(
            store_for(s),
            flush_s=s.prediction_log_flush_s,
            flush_rows=s.prediction_log_flush_rows,
            max_rows=s.prediction_log_buffer_rows,
            tick=shadow.refresh if shadow is not None else None,
        )
        return ServedLog(writer, shadow)

    def close_service(self) -> None:
        """Write what the prediction log still holds (a pool process ends)."""
        if self._service is not None and self._service.served_log is not None:
            self._service.served_log.close()

    def on_ready(self, hostname: str) -> None:
        """The worker is consuming: heartbeat, topology, the dead-letter collector."""
        s = self.settings
        queues = list(LANES[s.worker_lane])
        client = backend_client(s, socket_timeout=2, socket_connect_timeout=2)
        beat = WorkerHeartbeat(client, hostname, s.worker_heartbeat_s)

        def loop() -> None:
            while not self.heartbeat_stop.is_set():
                try:
                    beat.beat({"pid": os.getpid(), "lane": s.worker_lane, "queues": queues})
                except Exception as exc:  # the backend may be away for a while; keep beating
                    log.warning("heartbeat failed: %s", exc)
                self.heartbeat_stop.wait(s.worker_heartbeat_s)
            with contextlib.suppress(Exception):
                beat.clear()

        threading.Thread(target=loop, name="matchcast-heartbeat", daemon=True).start()
        with self.app.connection_for_write() as conn:
            declare_topology(s, conn)
        from matchcast.worker.dead_letters import DeadLetterCollector

        self.collector = DeadLetterCollector(self)
        self.collector.start()
        if MAINTENANCE_QUEUE in queues:
            from matchcast.worker.maintenance import seed_feed_metrics

            try:
                seed_feed_metrics(s)
            except Exception as exc:  # the store may be away for now; the next feed read sets them
                log.warning("could not seed the feed metrics: %s", type(exc).__name__)
        log.info("worker_ready hostname=%s lane=%s queues=%s", hostname, s.worker_lane, ",".join(queues))

    def on_shutdown(self) -> None:
        """Stop the heartbeat and the collector."""
        self.heartbeat_stop.set()
        with contextlib.suppress(Exception):  # a solo pool served in this process: its log rows are written
            self.close_service()
        if self.collector is not None:
            self.collector.stop.set()


_runtime: WorkerRuntime | None = None


def runtime() -> WorkerRuntime:
    """This process's worker runtime (``create_app`` made it)."""
    if _runtime is None:
        raise RuntimeError("no worker app in this process: call matchcast.worker.app.create_app(settings)")
    return _runtime


def create_app(settings: Settings) -> Celery:
    """The worker's Celery app for ``settings``, with matchcast's tasks and consumer (one per process)."""
    global _runtime
    from matchcast.worker.maintenance import register as register_maintenance
    from matchcast.worker.retrain import register as register_retrain
    from matchcast.worker.tasks import register

    app = make_celery(settings)
    app.conf.worker_consumer = "matchcast.worker.consumer:DeadLetteringConsumer"
    _runtime = WorkerRuntime(app, settings)
    register(app, settings)
    register_maintenance(app, settings)
    register_retrain(app, settings)
    return app


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    rt = runtime()
    if rt.settings.worker_lane != "maintenance":  # the maintenance lane predicts nothing: no model to load
        rt.init_service()


@signals.worker_process_shutdown.connect
def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if _runtime is not None:
        with contextlib.suppress(Exception):
            _runtime.close_service()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    runtime().on_ready(getattr(sender, "hostname", None) or socket.gethostname())


@signals.worker_shutting_down.connect
def _on_shutting_down(how: str | None = None, **_: Any) -> None:
    """SIGTERM began a warm shutdown: bound it by the grace period (``worker/drain.py``)."""
    if how == "Warm" and _runtime is not None:
        from matchcast.worker.drain import DrainWatchdog

        if _runtime.drain is None:
            _runtime.drain = DrainWatchdog(_runtime.settings.worker_shutdown_grace_s)
        _runtime.drain.start()


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _runtime is not None:
        _runtime.on_shutdown()
