"""The worker's Celery app. ``PredictionService`` is created once per worker process (``worker_process_init``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import signals

from matchcast.config import get_settings
from matchcast.metrics import MODEL_LOADS
from matchcast.service.prediction import PredictionService
from matchcast.service.queue import LANES, declare_topology, make_celery
from matchcast.service.tracking import WorkerHeartbeat
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger("matchcast.worker")
settings = get_settings()
app = make_celery(settings)
app.conf.imports = ("matchcast.worker.tasks",)
app.conf.worker_consumer = "matchcast.worker.consumer:DeadLetteringConsumer"

_service: PredictionService | None = None
_heartbeat_stop = threading.Event()
_collector: Any = None


def get_service() -> PredictionService:
    """This process's service, switched to a new champion within ``MATCHCAST_MODEL_REFRESH_S`` of its promotion.

    Created here only if the pool sent no ``worker_process_init``.
    """
    global _service
    if _service is None:
        _init_service()
    assert _service is not None
    switched = _service.refresh(settings.model_refresh_s)
    if switched is not None:
        MODEL_LOADS.labels(version=switched.version).inc()
    return _service


def _init_service() -> None:
    global _service
    started = time.perf_counter()
    _service = PredictionService(
        store_for(settings), registry_for(settings), settings.model_alias, markets=settings.markets
    )
    MODEL_LOADS.labels(version=_service.model.version).inc()
    log.info(
        "model_loaded pid=%d name=%s version=%s alias=%s seconds=%.3f",
        os.getpid(),
        _service.model.name,
        _service.model.version,
        settings.model_alias,
        time.perf_counter() - started,
    )


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    _init_service()


@signals.worker_process_shutdown.connect
def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    queues = list(LANES[settings.worker_lane])
    beat = WorkerHeartbeat(settings.resolved_result_backend(), hostname, settings.worker_heartbeat_s)

    def loop() -> None:
        while not _heartbeat_stop.is_set():
            try:
                beat.beat({"pid": os.getpid(), "lane": settings.worker_lane, "queues": queues})
            except Exception as exc:  # the backend may be away for a while; keep beating
                log.warning("heartbeat failed: %s", exc)
            _heartbeat_stop.wait(settings.worker_heartbeat_s)
        with contextlib.suppress(Exception):
            beat.clear()

    threading.Thread(target=loop, name="matchcast-heartbeat", daemon=True).start()
    with app.connection_for_write() as conn:
        declare_topology(settings, conn)
    from matchcast.worker.dead_letters import DeadLetterCollector

    global _collector
    _collector = DeadLetterCollector(app, settings)
    _collector.start()
    log.info(
        "worker_ready hostname=%s lane=%s queues=%s",
        hostname,
        settings.worker_lane,
        ",".join(queues),
    )


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    _heartbeat_stop.set()
    if _collector is not None:
        _collector.stop.set()
