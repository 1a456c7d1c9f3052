"""A Celery consumer that dead-letters what it cannot run instead of dropping it.

Celery acknowledges (drops) messages it cannot decode or does not know; matchcast keeps them, with the reason.

Each such message becomes exactly one dead letter. Celery rejects unknown and invalid task messages, and a rejected
message on a quorum queue is dead-lettered once more by the broker (reason ``rejected``); so once matchcast's own
letter is confirmed on ``ml.dead`` the message is acknowledged instead of rejected. Only if that letter could not
be published does Celery's reject stand, and the broker's copy is the dead letter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from celery.worker.consumer import Consumer
from kombu import Message
from kombu.exceptions import ContentDisallowed, DecodeError

from matchcast.worker.dead_letters import publish_dead_letter, raw_body_text
from matchcast.worker.delayed_delivery import ClusterDelayedDelivery

log = logging.getLogger("matchcast.worker.consumer")


_CELERY_DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"
_STEPS = [
    f"{ClusterDelayedDelivery.__module__}:{ClusterDelayedDelivery.__name__}"
    if step == _CELERY_DELAYED_DELIVERY
    else step
    for step in Consumer.Blueprint.default_steps
]


class DeadLetteringConsumer(Consumer):
    """Publishes undecodable, unknown and invalid messages to ``ml.dead`` before Celery drops them.

    Its delayed-delivery step is ``ClusterDelayedDelivery`` (one live node of a cluster is enough)."""

    class Blueprint(Consumer.Blueprint):
        """Celery's consumer steps, delayed delivery set up on one node of the cluster."""

        default_steps = _STEPS

    def _dead_letter(self, message: Message, reason: str, error: str) -> bool:
        """Publish the dead letter of ``message`` to ``ml.dead``; whether it is there (confirmed)."""
        headers = message.headers or {}
        try:
            publish_dead_letter(
                self.app,
                task_id=str(headers.get("id") or f"message-{id(message)}"),
                task_name=str(headers.get("task") or "unknown"),
                args={"raw": raw_body_text(message), "content_type": message.content_type},
                reason=reason,
                error=error,
                attempts=1,
            )
        except Exception:
            log.exception("could not dead-letter a %s message", reason)
            return False
        return True

    def _instead_of_reject(self, message: Message, reason: str, error: str, celery: Callable[[], None]) -> None:
        """Run Celery's handler (which rejects ``message`` and may mark the task failed), holding its reject
        back; then publish the dead letter and acknowledge the message, or, if the letter could not be
        published, let the reject go through (the broker dead-letters the message itself, reason ``rejected``).
        The letter comes after Celery's own failure mark, so the collector's ``DEAD_LETTERED`` is the last word."""
        held: list[tuple[Any, Any]] = []
        message.reject_log_error = lambda logger, errors, requeue=False: held.append((logger, errors))  # type: ignore[method-assign]
        try:
            celery()
        finally:
            del message.reject_log_error
        published = self._dead_letter(message, reason, error)
        for logger, errors in held:
            if published:
                message.ack_log_error(logger, errors)
            else:
                message.reject_log_error(logger, errors)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """A body in a foreign format (pickle, garbage): never executed, dead-lettered (Celery acks it)."""
        self._dead_letter(message, "undecodable", f"{type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        """A message without task headers."""
        celery = partial(super().on_unknown_message, body, message)
        self._instead_of_reject(message, "unknown_message", "not a task message", celery)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task name this worker does not run."""
        celery = partial(super().on_unknown_task, body, message, exc)
        self._instead_of_reject(message, "unknown_task", f"{type(exc).__name__}: {exc}", celery)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task message with invalid fields, or a body in a format the worker does not accept."""
        reason = "undecodable" if isinstance(exc, ContentDisallowed | DecodeError) else "invalid_task"
        celery = partial(super().on_invalid_task, body, message, exc)
        self._instead_of_reject(message, reason, f"{type(exc).__name__}: {exc}", celery)
