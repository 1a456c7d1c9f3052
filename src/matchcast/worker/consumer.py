"""A Celery consumer that dead-letters what it cannot run instead of dropping it.

Celery acknowledges (drops) messages it cannot decode or does not know; matchcast keeps them, with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from kombu import Message
from kombu.exceptions import ContentDisallowed, DecodeError

from matchcast.worker.dead_letters import publish_dead_letter, raw_body_text

log = logging.getLogger("matchcast.worker.consumer")


class DeadLetteringConsumer(Consumer):
    """Publishes undecodable, unknown and invalid messages to ``ml.dead`` before Celery drops them."""

    def _dead_letter(self, message: Message, reason: str, error: str) -> None:
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

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """A body in a foreign format (pickle, garbage): never executed, dead-lettered."""
        self._dead_letter(message, "undecodable", f"{type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        """A message without task headers."""
        self._dead_letter(message, "unknown_message", "not a task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task name this worker does not run."""
        self._dead_letter(message, "unknown_task", f"{type(exc).__name__}: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task message with invalid fields, or a body in a format the worker does not accept."""
        reason = "undecodable" if isinstance(exc, ContentDisallowed | DecodeError) else "invalid_task"
        self._dead_letter(message, reason, f"{type(exc).__name__}: {exc}")
        super().on_invalid_task(body, message, exc)
