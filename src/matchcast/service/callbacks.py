"""Completion callbacks: the final status of a task POSTed to the caller's URL, signed with HMAC-SHA256.

Headers: ``X-Matchcast-Signature: sha256=<hex>`` (HMAC-SHA256 of the raw body with ``MATCHCAST_CALLBACK_SECRET``),
``X-Matchcast-Task-Id`` and ``X-Matchcast-Attempt``. The URL is checked against the callback policy before every
attempt, so a host that starts resolving to a forbidden address between attempts is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import httpx

from matchcast.config import Settings
from matchcast.errors import CallbackUrlRefused
from matchcast.schemas import CallbackAttempt
from matchcast.service.callbacks_policy import check_callback_url_for

SIGNATURE_HEADER = "X-Matchcast-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether a signature header matches ``body`` (constant time); for receivers and tests."""
    return hmac.compare_digest(sign(secret, body), header)


def post_callback(settings: Settings, url: str, body: bytes, *, task_id: str, attempt: int) -> CallbackAttempt:
    """One delivery attempt; a 2xx answer is a delivery."""
    at = datetime.now(UTC)
    if settings.callback_secret is None:
        return CallbackAttempt(at=at, error="MATCHCAST_CALLBACK_SECRET is not set")
    try:
        check_callback_url_for(settings, url)
    except CallbackUrlRefused as exc:
        return CallbackAttempt(at=at, error=f"refused: {exc.detail}")
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(settings.callback_secret.get_secret_value(), body),
        "X-Matchcast-Task-Id": task_id,
        "X-Matchcast-Attempt": str(attempt),
        "User-Agent": "matchcast-callbacks",
    }
    try:
        r = httpx.post(url, content=body, headers=headers, timeout=settings.callback_timeout_s, follow_redirects=False)
    except httpx.HTTPError as exc:
        return CallbackAttempt(at=at, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return CallbackAttempt(at=at, status_code=r.status_code)
