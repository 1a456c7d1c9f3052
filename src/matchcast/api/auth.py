"""API keys on the HTTP API: which role each route needs, the dependencies that check it, per-key rate limits.

``app.py`` includes every router with ``dependencies=[AUTH]``: ``authorize`` then finds the role a route needs
from its method and path template (``required_role``), so route modules need no change, and a route nobody
thought about needs an ``admin`` key (default deny):

- ``/health``, ``/ready``, ``/metrics``: ``MATCHCAST_PROBES_AUTH`` (``open`` by default);
- ``/predict/...`` (any method), ``GET /monitoring/task_status/{task_id}`` and ``/monitoring/batch_status/...``
  (reading, streaming; cancelling checks in the route that the key submitted the batch): ``predict``;
- everything else, e.g. ``GET /monitoring/dead_letters``, ``POST .../replay``, ``DELETE .../task_status/..``: admin.

A route can also state its role itself with a parameter ``key: AdminKey`` (or ``PredictKey``), which gives it the
caller's ``ApiKeyInfo`` (None when ``MATCHCAST_AUTH=off``). Answers: 401 ``unauthorized`` (with
``WWW-Authenticate: Bearer``) without a valid key, 403 ``forbidden`` for a key of the wrong role, 429
``rate_limited`` (with ``Retry-After``) past ``MATCHCAST_RATE_LIMIT_PER_S``/``_BURST`` per key and API process.

The decision itself (the key a request presents, the role a path needs, the rate-limit bucket and its token) is
``api/access.py``'s, which the fast paths (``api/fastpath.py``) call too; what is left here is FastAPI's part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from matchcast.api.access import PROBES as PROBES
from matchcast.api.access import admit, presented_key, required_role
from matchcast.api.deps import Parts
from matchcast.config import Settings
from matchcast.schemas import ErrorBody
from matchcast.service.auth import ApiKeyInfo, Role, hash_token, key_service_for
from matchcast.service.ratelimit import TokenBuckets

log = logging.getLogger("matchcast.api")
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key (`unauthorized`)"},
    403: {"model": ErrorBody, "description": "The API key's role does not allow this (`forbidden`)"},
    429: {"model": ErrorBody, "description": "Rate limit of the API key exceeded (`rate_limited`, `Retry-After`)"},
}
_STATUSES = tuple(str(code) for code in AUTH_RESPONSES)
# Parameters of these types put the two schemes in the OpenAPI document; their values go unused: the decision reads
# the raw headers (``access.presented_key``), as the fast path does, so that both read them the same way.
_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey", description="`X-API-Key: <API key>`")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
ApiKeyHeader = Annotated[str | None, Security(_header)]


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


async def _verdict(request: Request, parts: Parts) -> ApiKeyInfo | None:
    """The verdict on the key the request presents: cached, or looked up once for every request that waits."""
    token = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    keys = parts.keys
    assert keys is not None
    hit, info = keys.cached(token)
    if not hit:
        info = await parts.flights.run(("api-key", hash_token(token)), lambda: keys.verify(token))
    return info


async def _enforce(request: Request, role: Role) -> ApiKeyInfo | None:
    """The caller's valid key (None when auth is off) once ``admit`` lets the request go on.

    The key is looked up, and a rate-limit token taken, once per request, however many dependencies check it."""
    parts = _parts(request)
    state = request.state
    key: ApiKeyInfo | None = getattr(state, "matchcast_key", None)
    if key is None and parts.settings.auth != "off":
        key = state.matchcast_key = await _verdict(request, parts)
    taken = getattr(state, "matchcast_limited", False)
    state.matchcast_limited = True
    assert parts.limiter is not None
    admit(parts.settings, parts.limiter, role, key, request.scope.get("client"), take=not taken)
    return key


async def authorize(request: Request, bearer: Bearer, api_key: ApiKeyHeader) -> ApiKeyInfo | None:
    """Router-level check: the role ``required_role`` gives this route. The caller's key, or None if open."""
    route = request.scope.get("route")
    role = required_role(request.method, getattr(route, "path", request.url.path), _parts(request).settings)
    if role is None:
        return None
    return await _enforce(request, role)


def _require(role: Role) -> Callable[..., Any]:
    async def dependency(request: Request, bearer: Bearer, api_key: ApiKeyHeader) -> ApiKeyInfo | None:
        return await _enforce(request, role)

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
