"""Who may call what: the one decision the routes (``api/auth.py``) and the fast paths (``api/fastpath.py``) share.

Plain synchronous functions, so the fast path pays no await and no FastAPI machinery for them:

- ``required_role``: the role a method and path template need (None: open to anyone);
- ``presented_key``: the one API key a request's ``Authorization`` and ``X-API-Key`` headers carry;
- ``admit``: once that key's verdict is known (the routes look it up, the fast path takes a cached one only),
  whether the request may go on: 401 without a valid key, 429 past its rate limit (the token is taken here), 403
  for a key of the wrong role, in that order.

A refusal is a domain error (``REFUSALS``). The routes let it through to the error handler; the fast path, which
must answer only what the route would answer the same way, passes such a request on to the route instead.
"""

from __future__ import annotations

import math

from matchcast.config import Settings
from matchcast.errors import Forbidden, RateLimited, Unauthorized
from matchcast.service.auth import ApiKeyInfo, Role
from matchcast.service.ratelimit import TokenBuckets

PROBES = frozenset({"/health", "/ready", "/metrics"})
READ_METHODS = frozenset({"GET", "HEAD"})
REFUSALS = (Unauthorized, RateLimited, Forbidden)
# Reading (and streaming) them needs predict; so do the live scores.
WATCHED = ("/monitoring/task_status/", "/monitoring/batch_status/", "/monitoring/live")


def required_role(method: str, path: str, settings: Settings) -> Role | None:
    """The role a route needs (None: open to anyone), from its method and path template."""
    if path in PROBES:
        return None if settings.probes_auth == "open" else settings.probes_auth
    if path == "/predict" or path.startswith("/predict/"):
        return "predict"
    if path.startswith(WATCHED) and method.upper() in READ_METHODS:
        return "predict"
    if path.startswith("/monitoring/batch_status/"):  # cancelling: the key that submitted the batch, or an admin's
        return "predict"
    return "admin"


def presented_key(authorization: str | None, api_key: str | None) -> str:
    """The one API key in ``Authorization: Bearer <key>`` and ``X-API-Key: <key>`` (the header values, None when
    absent); ``Unauthorized`` for none, an Authorization header of another form, or two different keys."""
    bearer = ""
    if authorization is not None:
        scheme, _, bearer = authorization.partition(" ")
        bearer = bearer.strip()
        if not bearer or scheme.lower() != "bearer":
            raise Unauthorized("the Authorization header must read `Bearer <API key>`")
    key = api_key.strip() if api_key else ""
    if bearer and key and bearer != key:
        raise Unauthorized("the Authorization and X-API-Key headers carry different keys")
    if not (bearer or key):
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
    return bearer or key


def admit(
    settings: Settings,
    limiter: TokenBuckets,
    role: Role,
    key: ApiKeyInfo | None,
    client: tuple[str, int] | None,
    *,
    take: bool = True,
) -> None:
    """Let a request that needs ``role`` go on, or raise one of ``REFUSALS``.

    ``key`` is the verdict on the key it presented (None: no valid key), ``client`` the ASGI scope's client.
    With ``MATCHCAST_AUTH=off`` no key is needed and the rate limit is per client address; otherwise per key.
    ``take=False`` when this request's token was taken already (a route may check its role twice).
    """
    if settings.auth == "off":
        bucket = f"client:{client[0] if client else '-'}"
    elif key is None:
        raise Unauthorized("invalid or revoked API key")
    else:
        bucket = f"key:{key.key_id}"
    if take and (wait := limiter.take(bucket)) > 0:
        raise RateLimited(
            f"rate limit of {settings.rate_limit_per_s:g} requests/s (burst {settings.rate_limit_burst}) exceeded; "
            f"retry in {wait:.2f} s",
            retry_after_s=max(1, math.ceil(wait)),
        )
    if key is not None and not key.allows(role):
        raise Forbidden(f"this needs an {role} key; key {key.key_id} has the role {key.role}")
