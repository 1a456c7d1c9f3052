"""The Celery application's configuration, shared by the API (which only sends by task name) and workers."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from matchcast.config import ML_QUEUE, PREDICT_TASK, Settings


def make_celery(settings: Settings) -> Celery:
    """A Celery app for these settings: JSON only, the ``ml`` queue, late acks, bounded publishing."""
    app = Celery("matchcast", broker=settings.resolved_broker_url(), backend=settings.resolved_result_backend())
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=(Queue(ML_QUEUE, Exchange(ML_QUEUE, type="direct"), routing_key=ML_QUEUE, durable=True),),
        task_default_queue=ML_QUEUE,
        task_default_exchange=ML_QUEUE,
        task_default_routing_key=ML_QUEUE,
        task_routes={PREDICT_TASK: {"queue": ML_QUEUE}},
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        task_time_limit=60,
        task_soft_time_limit=30,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        result_expires=settings.task_ttl_s,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2.0,
        broker_pool_limit=20,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 2},
        result_backend_transport_options={
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry_policy": {"timeout": 2.0},
        },
        redis_socket_timeout=5,
        redis_socket_connect_timeout=2,
        enable_utc=True,
    )
    return app
