"""API keys on the HTTP API: which role each route needs, the dependencies that check it, per-key rate limits.

``app.py`` includes every router with ``dependencies=[AUTH]``: ``authorize`` then finds the role a route needs
from its method and path template (``required_role``), so route modules need no change, and a route nobody
thought about needs an ``admin`` key (default deny):

- ``/health``, ``/ready``, ``/metrics``: ``MATCHCAST_PROBES_AUTH`` (``open`` by default);
- ``/predict/...`` (any method) and ``GET /monitoring/task_status/{task_id}``: ``predict``;
- everything else, e.g. ``GET /monitoring/dead_letters``, ``POST .../replay``, ``DELETE .../task_status/..``: admin.

A route can also state its role itself with a parameter ``key: AdminKey`` (or ``PredictKey``), which gives it the
caller's ``ApiKeyInfo`` (None when ``MATCHCAST_AUTH=off``). Answers: 401 ``unauthorized`` (with
``WWW-Authenticate: Bearer``) without a valid key, 403 ``forbidden`` for a key of the wrong role, 429
``rate_limited`` (with ``Retry-After``) past ``MATCHCAST_RATE_LIMIT_PER_S``/``_BURST`` per key and API process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from matchcast.api.deps import Parts
from matchcast.config import Settings
from matchcast.errors import Forbidden, RateLimited, Unauthorized
from matchcast.schemas import ErrorBody
from matchcast.service.auth import ApiKeyInfo, ApiKeyService, Role, hash_token, key_service_for
from matchcast.service.ratelimit import TokenBuckets

log = logging.getLogger("matchcast.api")
PROBES = frozenset({"/health", "/ready", "/metrics"})
READ_METHODS = frozenset({"GET", "HEAD"})
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key (`unauthorized`)"},
    403: {"model": ErrorBody, "description": "The API key's role does not allow this (`forbidden`)"},
    429: {"model": ErrorBody, "description": "Rate limit of the API key exceeded (`rate_limited`, `Retry-After`)"},
}
_STATUSES = tuple(str(code) for code in AUTH_RESPONSES)
_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey", description="`X-API-Key: <API key>`")
_UNSET = object()


def required_role(method: str, path: str, settings: Settings) -> Role | None:
    """The role a route needs (None: open to anyone), from its method and path template."""
    if path in PROBES:
        return None if settings.probes_auth == "open" else settings.probes_auth
    if path == "/predict" or path.startswith("/predict/"):
        return "predict"
    if path.startswith("/monitoring/task_status/") and method.upper() in READ_METHODS:
        return "predict"
    return "admin"


def _parts(request: Request) -> Parts:
    parts: Parts = request.app.state.parts
    if parts.keys is None:
        parts.keys = key_service_for(parts.settings)
    if parts.limiter is None:
        parts.limiter = limiter_for(parts.settings)
    return parts


def limiter_for(settings: Settings) -> TokenBuckets:
    """The rate limiter these settings describe."""
    return TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)


def _rate_limit(request: Request, parts: Parts, bucket: str) -> None:
    """Take one token from ``bucket``, once per request."""
    if getattr(request.state, "matchcast_limited", False):
        return
    request.state.matchcast_limited = True
    assert parts.limiter is not None
    wait = parts.limiter.take(bucket)
    if wait > 0:
        s = parts.settings
        raise RateLimited(
            f"rate limit of {s.rate_limit_per_s:g} requests/s (burst {s.rate_limit_burst}) exceeded; "
            f"retry in {wait:.2f} s",
            retry_after_s=max(1, math.ceil(wait)),
        )


async def _identify(
    request: Request, parts: Parts, bearer: HTTPAuthorizationCredentials | None, api_key: str | None
) -> ApiKeyInfo:
    """The caller's valid key (checked once per request), or ``Unauthorized``."""
    known = getattr(request.state, "matchcast_key", _UNSET)
    if isinstance(known, ApiKeyInfo):
        return known
    if request.headers.get("authorization") is not None and bearer is None:
        raise Unauthorized("the Authorization header must read `Bearer <API key>`")
    tokens = {t.strip() for t in ((bearer.credentials if bearer else None), api_key) if t and t.strip()}
    if not tokens:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
    if len(tokens) > 1:
        raise Unauthorized("the Authorization and X-API-Key headers carry different keys")
    token = tokens.pop()
    keys: ApiKeyService | None = parts.keys
    assert keys is not None
    hit, info = keys.cached(token)
    if not hit:
        info = await parts.flights.run(("api-key", hash_token(token)), lambda: keys.verify(token))
    if info is None:
        raise Unauthorized("invalid or revoked API key")
    request.state.matchcast_key = info
    _rate_limit(request, parts, f"key:{info.key_id}")
    return info


async def _enforce(
    request: Request, role: Role, bearer: HTTPAuthorizationCredentials | None, api_key: str | None
) -> ApiKeyInfo | None:
    parts = _parts(request)
    if parts.settings.auth == "off":
        _rate_limit(request, parts, f"client:{request.client.host if request.client else '-'}")
        return None
    info = await _identify(request, parts, bearer, api_key)
    if not info.allows(role):
        raise Forbidden(f"this needs an {role} key; key {info.key_id} has the role {info.role}")
    return info


async def authorize(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_header)],
) -> ApiKeyInfo | None:
    """Router-level check: the role ``required_role`` gives this route. The caller's key, or None if open."""
    route = request.scope.get("route")
    role = required_role(request.method, getattr(route, "path", request.url.path), _parts(request).settings)
    if role is None:
        return None
    return await _enforce(request, role, bearer, api_key)


def _require(role: Role) -> Callable[..., Any]:
    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_header)],
    ) -> ApiKeyInfo | None:
        return await _enforce(request, role, bearer, api_key)

    dependency.__name__ = f"require_{role}"
    dependency.__doc__ = f"A valid key of role {role!r} (admin allows everything); None when auth is off."
    return dependency


require_predict = _require("predict")
require_admin = _require("admin")
AUTH = Depends(authorize)
PredictKey = Annotated[ApiKeyInfo | None, Depends(require_predict)]
AdminKey = Annotated[ApiKeyInfo | None, Depends(require_admin)]


def document_auth(app: FastAPI, settings: Settings) -> None:
    """Make the OpenAPI schema say what is enforced: open probes (and everything with auth off) carry no
    security requirement and no 401/403/429 answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's, cached and rebuilt when routes change; the edits below are idempotent
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                if not isinstance(op, dict):
                    continue
                open_probe = required_role(method, path, settings) is None
                if settings.auth == "off" or open_probe:
                    op.pop("security", None)
                    for code in _STATUSES if open_probe else ("401", "403"):
                        op.get("responses", {}).pop(code, None)
        if settings.auth == "off":
            schema.get("components", {}).pop("securitySchemes", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.auth == "off":
        log.warning("MATCHCAST_AUTH=off: the API accepts every request without an API key")
