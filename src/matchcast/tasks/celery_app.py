"""The Celery application and the broker topology, shared by the API (which only publishes) and the workers.

Four queues on one exchange: ``ml.interactive`` carries sync requests (grouped: one ``predict_match_group``
message holds every request an API process had waiting), ``ml`` single async predictions, callbacks and the
chunks of async submissions, ``ml.bulk`` the chunks of batch submissions, and ``ml.bulk.0`` .. ``ml.bulk.3`` the
same with fair share (each API key's batches in one of them while it has work: ``tasks/fairshare.py``; the bulk
lane consumes them all, and the broker takes from each in turn), ``ml.maintenance`` feed ingests, uploads and
retraining. Workers of the ``interactive`` lane serve only ``ml.interactive``, so a flood of async work never
queues in front of someone waiting on a screen; maintenance work has a lane of its own.

On RabbitMQ, each is a durable quorum queue on a topic exchange (topic, so Celery's native delayed delivery
can carry retry countdowns) with a delivery limit; messages it rejects or that exceed the limit are
dead-lettered through the exchange ``ml.dlx`` into the quorum queue ``ml.dead``. ``MATCHCAST_BROKER_URL`` may
be a cluster as a failover list (``amqp://a//;amqp://b//;amqp://c//``): kombu moves to the next URL when one
fails, and the quorum queues keep their messages while a node is lost. Publishing waits for the
broker's confirm. On Redis (the embedded default) the same names are plain lists.
"""

from __future__ import annotations

from typing import Any

from amqp.exceptions import AMQPError
from celery import Celery
from celery.backends.redis import SentinelBackend
from kombu import Connection, Exchange, Queue

from matchcast.config import Settings
from matchcast.tasks.backend_client import CELERY_SENTINEL, ReplicaWait, celery_backend_options
from matchcast.tasks.names import (
    BULK_QUEUE,
    BULK_TASK,
    CALLBACK_TASK,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    INGEST_FEEDS_TASK,
    INGEST_UPLOAD_TASK,
    INTERACTIVE_QUEUE,
    LANES,
    MAINTENANCE_QUEUE,
    ML_QUEUE,
    PREDICT_GROUP_TASK,
    PREDICT_TASK,
    PRUNE_LOG_TASK,
    RETRAIN_TASK,
)

# A publisher waits this long for a socket read (a confirm) or write before it drops the connection and sends
# again, through the next node of a failover list. A confirm from a healthy quorum queue takes milliseconds and a
# new queue leader is elected within seconds; a node cut off from the network never answers (nor refuses).
PUBLISH_IO_TIMEOUT_S = 4.0


def is_amqp(url: str) -> bool:
    """Whether a broker URL names RabbitMQ (AMQP)."""
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def ml_queue(settings: Settings, name: str = ML_QUEUE) -> Queue:
    """The ``ml`` queue (or ``ml.interactive``, ``ml.bulk``, ``ml.bulk.N``) as this broker supports it best."""
    if is_amqp(settings.resolved_broker_url()):
        return Queue(
            name,
            Exchange(ML_QUEUE, type="topic", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": settings.delivery_limit,
                "x-dead-letter-exchange": DEAD_EXCHANGE,
                "x-dead-letter-routing-key": DEAD_QUEUE,
            },
        )
    return Queue(name, Exchange(ML_QUEUE, type="direct"), routing_key=name, durable=True)


def dead_queue() -> Queue:
    """Where the broker puts what ``ml`` rejected or could not deliver (RabbitMQ).

    A quorum queue like the others: a classic queue lives on one node of a cluster, and while that node is down
    the quorum queues' dead letters would have nowhere to go (RabbitMQ drops them) and the collectors nothing to
    read. Other brokers ignore the argument."""
    return Queue(
        DEAD_QUEUE,
        Exchange(DEAD_EXCHANGE, type="direct", durable=True),
        routing_key=DEAD_QUEUE,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def declare_topology(settings: Settings, conn: Connection) -> None:
    """Declare ``ml`` and, on RabbitMQ, its dead-letter exchange and queue (idempotent)."""
    channel = conn.default_channel
    if is_amqp(settings.resolved_broker_url()):
        dead_queue()(channel).declare()
    for name in LANES["all"]:
        ml_queue(settings, name)(channel).declare()


class MatchcastCelery(Celery):
    """A Celery app whose result writes wait for replicas when the settings ask it (``ReplicaWait``), and whose
    Sentinel result backend asks a majority of the Sentinels where the master is (``MajoritySentinel``)."""

    replica_wait = ReplicaWait(0, 0)

    def _get_backend(self) -> Any:
        backend = super()._get_backend()
        if isinstance(backend, SentinelBackend):
            backend.sentinel = CELERY_SENTINEL  # before its client is made: it is made on first use
        if self.replica_wait.replicas and hasattr(backend, "_set"):
            backend._set = _replicated_set(backend, self.replica_wait)
        return backend


def _replicated_set(backend: Any, wait: ReplicaWait) -> Any:
    """Celery's Redis ``_set`` (store and publish a result record) with ``WAIT`` last in its pipeline."""

    def _set(key: str, value: Any, expires: int | None = None) -> None:
        expires = backend.expires if expires is None else expires
        with backend.client.pipeline(transaction=False) as pipe:  # WAIT is refused inside MULTI
            if expires:
                pipe.setex(key, expires, value)
            else:
                pipe.set(key, value)
            pipe.publish(key, value)
            wait.execute(pipe)

    return _set


class PublisherCelery(MatchcastCelery):
    """A Celery client that only publishes: it hears results through its own listener (``api/listener.py``).

    Celery's Redis result backend subscribes a client to every task it sends (``on_task_call``), costing a
    blocking round trip per request and a subscription that nobody reads; this client skips that.
    """

    def _get_backend(self) -> Any:
        backend = super()._get_backend()
        backend.on_task_call = _no_subscription
        return backend


def _no_subscription(*_: Any, **__: Any) -> None:
    return None


def make_celery(settings: Settings, *, publisher: bool = False) -> Celery:
    """A Celery app for these settings: JSON only, the ``ml`` queue, late acks, bounded publishing."""
    broker = settings.resolved_broker_url()
    cls = PublisherCelery if publisher else MatchcastCelery
    app = cls("matchcast", broker=broker, backend=settings.resolved_result_backend())
    app.replica_wait = ReplicaWait.of(settings)
    retry_s = 2.0 if publisher else settings.result_backend_retry_s  # the API answers 503 rather than wait
    if is_amqp(broker):
        transport: dict[str, Any] = {"confirm_publish": True, "connect_timeout": 2}
        if publisher:  # a node cut off leaves a connection hanging: a confirm not read by then fails over
            transport |= {"read_timeout": PUBLISH_IO_TIMEOUT_S, "write_timeout": PUBLISH_IO_TIMEOUT_S}
    else:
        # Unacknowledged messages come back after this long when a worker dies without acking.
        transport = {
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=tuple(ml_queue(settings, name) for name in LANES["all"]),
        task_default_queue=ML_QUEUE,
        task_default_exchange=ML_QUEUE,
        task_default_routing_key=ML_QUEUE,
        task_routes={
            PREDICT_TASK: {"queue": ML_QUEUE},
            PREDICT_GROUP_TASK: {"queue": INTERACTIVE_QUEUE},
            CALLBACK_TASK: {"queue": ML_QUEUE},
            BULK_TASK: {"queue": BULK_QUEUE},
            INGEST_FEEDS_TASK: {"queue": MAINTENANCE_QUEUE},
            INGEST_UPLOAD_TASK: {"queue": MAINTENANCE_QUEUE},
            RETRAIN_TASK: {"queue": MAINTENANCE_QUEUE},
            PRUNE_LOG_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_track_started=True,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(1, settings.task_time_limit_s // 2),
        # Tasks ack late, so a bulk-lane worker with multiplier 1 holds only the chunks it runs: another key's batch
        # waits for a process to come free, not for chunks held in front of it (fair share).
        worker_prefetch_multiplier=settings.bulk_prefetch
        if settings.worker_lane == "bulk"
        else settings.worker_prefetch,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        result_expires=settings.task_ttl_s,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=2.0,
        broker_heartbeat=10,
        # A worker's remote-control queue (pidbox) is not exclusive: after a partition the node may still hold the
        # old connection's queue, and an exclusive one makes the reconnecting worker die of RESOURCE_LOCKED. Unused
        # for control_queue_expires (10 s), the queue goes away by itself.
        control_queue_exclusive=False,
        broker_pool_limit=20,
        task_publish_retry=True,
        # One more try per extra node of a failover list: a publish that lost its node tries the next one.
        task_publish_retry_policy={
            "max_retries": 2 + broker.count(";"),
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.3,
        },
        broker_transport_options=transport,
        result_backend_transport_options={
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry_policy": {"timeout": retry_s, "max_retries": None, "interval_max": 0.5},
            **celery_backend_options(settings),
        },
        # Every backend read and write of a worker is retried while the backend is away (a failover, a restart):
        # Celery reads a task's record before storing its state, outside the task body, and a read that failed
        # there would acknowledge the message unrun (the task silently PENDING). ~2 retries a second, jittered.
        result_backend_always_retry=not publisher,
        result_backend_max_retries=int(2 * retry_s) + 4,
        result_backend_base_sleep_between_retries_ms=100,
        result_backend_max_sleep_between_retries_ms=1000,
        redis_socket_timeout=5,
        redis_socket_connect_timeout=2,
        redis_backend_health_check_interval=10,
        enable_utc=True,
    )
    return app


def queue_depth(settings: Settings, conn: Connection, queue: str = ML_QUEUE) -> tuple[int, int | None]:
    """Messages waiting in ``queue`` (``ml`` by default) and, on RabbitMQ, its consumers."""
    conn.ensure_connection(max_retries=1, timeout=settings.readiness_timeout_s)
    if conn.transport.driver_type == "amqp":
        try:
            _, depth, consumers = conn.default_channel.queue_declare(queue, passive=True)
        except AMQPError:  # not declared yet: nothing waits, nobody consumes
            conn.close()
            return 0, 0
        return int(depth), int(consumers)
    client: Any = conn.default_channel.client  # type: ignore[attr-defined]
    return int(client.llen(queue)), None
