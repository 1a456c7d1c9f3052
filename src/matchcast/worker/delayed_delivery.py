"""Celery's native delayed delivery, set up on one node of a RabbitMQ cluster instead of on every URL.

Celery's ``DelayedDelivery`` consumer step declares the delay exchanges and binds the queues on each URL of a
failover list in turn, retrying each one that fails (1 + 3 + 5 s). A cluster shares its exchanges and bindings,
so one node that answers is enough; and the step runs each time the consumer reconnects, so with Celery's step a
worker that lost its node waited some 17 s for the dead one before it consumed again from a live one.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery
from kombu.utils.url import maybe_sanitize_url

AMQP_PORT = 5672

log = logging.getLogger("matchcast.worker")


class ClusterDelayedDelivery(DelayedDelivery):
    """Native delayed delivery declared on the first node of the failover list that answers."""

    def start(self, c: Consumer) -> None:
        """Declare on the node the consumer is connected to, else on the first other one that answers; the others
        share what it declared. (A node cut off the network answers nothing: trying it first would keep the
        consumer from consuming for its connect timeouts, each time it reconnects while the node is away.)"""
        self._validate_configuration(c.app)
        valid = self._validate_broker_urls(c.app.conf.broker_url)  # a set: the list's order is lost
        listed = [u.strip() for u in str(c.app.conf.broker_url).split(";")]
        current = _node(getattr(c.connection, "hostname", None), getattr(c.connection, "port", None))

        def rank(url: str) -> tuple[bool, int]:
            node = _node(urlsplit(url).hostname, urlsplit(url).port)
            return node != current, listed.index(url) if url in listed else len(listed)

        for url in sorted(valid, key=rank):
            try:
                self._setup_delayed_delivery(c, url)
                return
            except Exception as exc:  # that node is away: the next one will do
                log.warning("delayed delivery not set up on %s: %s", maybe_sanitize_url(url), exc)
        log.critical("delayed delivery set up on no broker node: retry countdowns are not available")


def _node(host: str | None, port: int | None) -> tuple[str | None, int]:
    """A broker node as (host, port), the AMQP port when none is given."""
    return host, int(port or AMQP_PORT)
