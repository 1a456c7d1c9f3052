"""A broker cluster given as a failover list of URLs (``amqp://a//;amqp://b//;amqp://c//``): its nodes, one by one.

kombu takes the list as it is (it moves to the next URL when one fails); readiness asks each node on its own, so
``/ready`` can say which nodes are reachable, and reads ``ml``'s depth from the first node that answers (a quorum
queue has the same depth on every member).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from urllib.parse import urlsplit

from kombu import Connection

from matchcast.config import Settings, redact_text, secrets_of
from matchcast.tasks.celery_app import is_amqp, queue_depth
from matchcast.tasks.names import INTERACTIVE_QUEUE, MAINTENANCE_QUEUE, ML_QUEUE


def broker_urls(url: str) -> list[str]:
    """The URLs of a failover list (one URL is a list of one)."""
    return [part.strip() for part in url.split(";") if part.strip()]


def node_label(url: str) -> str:
    """How a node is named in ``/ready``: its host and port (never its credentials)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or 5672}" if parts.hostname else url.split("://", 1)[0]
    except ValueError:
        return "?"


@dataclass(frozen=True, slots=True)
class NodeProbe:
    """What one broker node answered: ``ml``'s depth and, on RabbitMQ, consumers per queue; or why not."""

    label: str
    depth: int | None = None
    consumers: dict[str, int] | None = None
    error: str | None = None


def broker_connection(settings: Settings, url: str | None = None, timeout: float | None = None) -> Connection:
    """A connection for short questions (queue depths): its connect, and on RabbitMQ every socket read and write,
    bounded by ``timeout`` (the readiness timeout by default), so a node cut off cannot hang the asker."""
    url = url or settings.resolved_broker_url()
    timeout = timeout or settings.readiness_timeout_s
    options = {"read_timeout": timeout, "write_timeout": timeout} if is_amqp(url) else {}
    return Connection(url, connect_timeout=timeout, transport_options=options)


PROBE_SHARE = 0.75  # of the readiness timeout: a node that does not answer by then is named, not waited for


def _probe(settings: Settings, url: str) -> NodeProbe:
    label = node_label(url)
    try:
        with broker_connection(settings, url, settings.readiness_timeout_s * PROBE_SHARE) as conn:
            depth, consumers = queue_depth(settings, conn)
            if consumers is None:
                return NodeProbe(label, depth)
            counts = {ML_QUEUE: consumers}
            for queue in (INTERACTIVE_QUEUE, MAINTENANCE_QUEUE):
                counts[queue] = queue_depth(settings, conn, queue)[1] or 0
            return NodeProbe(label, depth, counts)
    except Exception as exc:
        text = redact_text(str(exc), secrets_of(settings))[:200]
        return NodeProbe(label, error=f"{type(exc).__name__}: {text}")


def probe_nodes(settings: Settings) -> list[NodeProbe]:
    """Ask every node of the broker URL at once; one that has not answered within its share of the readiness
    timeout (a partitioned node lets a connection hang rather than refuse it) is reported as such."""
    urls = broker_urls(settings.resolved_broker_url())
    if len(urls) == 1:
        return [_probe(settings, urls[0])]
    pool = ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="matchcast-broker-probe")
    try:
        futures = [pool.submit(_probe, settings, u) for u in urls]
        wait(futures, timeout=settings.readiness_timeout_s * PROBE_SHARE)
        late = f"TimeoutError: no answer within {settings.readiness_timeout_s * PROBE_SHARE:g} s"
        return [
            f.result() if f.done() else NodeProbe(node_label(u), error=late) for f, u in zip(futures, urls, strict=True)
        ]
    finally:
        pool.shutdown(wait=False)  # a hanging probe ends with its connect timeout, on its own
