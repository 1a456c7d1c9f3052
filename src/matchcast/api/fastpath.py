"""``POST /predict/async/`` in its everyday form, answered below FastAPI's per-request machinery.

Accepting an async submission is a lookup, a key check and a place in the next group: tens of microseconds. The
FastAPI route around it (routing, the request object, dependency and body validation, the response class) costs
several times that, and it is what bounds how many submissions an API process accepts per second.

The everyday form: a JSON body that is exactly ``{"match_id": <integer>}`` naming a stored match, sent with an
API key of the predict (or admin) role verified in the last ``MATCHCAST_API_KEY_CACHE_S`` seconds (or with auth
off), no ``Idempotency-Key`` and no ``callback_url``, while the serving model's metadata is cached. Only such a
request is answered here, by the same dispatcher call as the route makes, with the same body and status.

Everything else goes on, body replayed, to the FastAPI route, which stays the reference and the one the OpenAPI
schema documents: a body it must validate, a key to look up, an unknown match, a rate limit to refuse. So every
error answer still comes from one place; the only errors raised here are those of the submission itself (503
broker or result backend down, 429 backlog full), rendered by ``errors.answer_of`` as the route would.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchcast.api.deps import Parts
from matchcast.api.errors import answer_of
from matchcast.data.features import FEATURE_VERSION
from matchcast.errors import MatchcastError
from matchcast.metrics import PREDICTION_REQUESTS

PATH = "/predict/async/"
MAX_MATCH_ID = 2**31 - 1
_ASYNC_REQUESTS = PREDICTION_REQUESTS.labels(source="async")
_WANTED = frozenset({b"content-type", b"authorization", b"x-api-key", b"idempotency-key"})


def _headers(status: int, body: bytes, extra: dict[str, str] | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": headers}


class AsyncSubmitFastPath:
    """ASGI middleware: answers everyday ``POST /predict/async/`` requests itself; passes on everything else."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app, self.enabled = app, enabled
        self._route: Route | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # The body (BodyLimit, outside, has capped its size already).
        chunks: list[Message] = []
        while True:
            msg = await receive()
            chunks.append(msg)
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                break
        parts: Parts | None = getattr(scope["app"].state, "parts", None)
        match_id = None if parts is None else self._everyday(scope, chunks, parts)
        if match_id is None or parts is None:

            async def replay() -> Message:
                return chunks.pop(0) if chunks else await receive()

            await self.app(scope, replay, send)
            return
        scope["route"] = self._route_of(scope)  # RequestMetrics labels the request by its route template
        model = parts.catalog.fresh()
        assert model is not None  # checked in _everyday, and nothing awaited since
        key = f"match:{match_id}:{model.version}:{FEATURE_VERSION}"
        try:
            task_id = await parts.dispatcher.submit({"match_id": match_id}, idempotency_key=key)
        except MatchcastError as exc:
            status, error, extra = answer_of(exc)
            body = orjson.dumps(error)
            await send(_headers(status, body, extra))
            await send({"type": "http.response.body", "body": body})
            return
        _ASYNC_REQUESTS.inc()
        body = orjson.dumps(
            {"task_id": task_id, "status": "submitted", "status_url": f"/monitoring/task_status/{task_id}"}
        )
        await send(_headers(202, body))
        await send({"type": "http.response.body", "body": body})

    def _everyday(self, scope: Scope, chunks: list[Message], parts: Parts) -> int | None:
        """The match id if this request is the everyday form, with its rate-limit token taken; else None."""
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                if name in found:  # a repeated header: let the route decide what it means
                    return None
                found[name] = value
        if b"idempotency-key" in found or not found.get(b"content-type", b"").startswith(b"application/json"):
            return None
        try:
            data = orjson.loads(b"".join(m.get("body", b"") for m in chunks if m["type"] == "http.request"))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or len(data) != 1:
            return None
        match_id = data.get("match_id")
        if type(match_id) is not int or not 1 <= match_id <= MAX_MATCH_ID:
            return None
        if not parts.known_matches().quick(match_id) or parts.catalog.fresh() is None:
            return None
        if parts.settings.auth == "off":
            client = scope.get("client")
            bucket: str | None = f"client:{client[0] if client else '-'}"
        else:
            bucket = self._key_bucket(found, parts)
        if bucket is None:
            return None
        # The last check, as it is the only one with an effect: a refused token goes to the route, which
        # refuses it again (429, with its Retry-After) without taking a second token.
        if parts.limiter is None or parts.limiter.take(bucket) > 0:
            return None
        return match_id

    @staticmethod
    def _key_bucket(found: dict[bytes, bytes], parts: Parts) -> str | None:
        """The rate-limit bucket of a cached, valid key allowed to predict; None to let the route decide."""
        tokens: set[str] = set()
        authorization = found.get(b"authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                return None
            tokens.add(credentials.strip())
        api_key = found.get(b"x-api-key", b"").decode("latin-1").strip()
        if api_key:
            tokens.add(api_key)
        if len(tokens) != 1 or parts.keys is None:
            return None
        hit, info = parts.keys.cached(tokens.pop())
        if not hit or info is None or not info.allows("predict"):
            return None
        return f"key:{info.key_id}"

    def _route_of(self, scope: Scope) -> Route | None:
        if self._route is None:
            for route in scope["app"].routes:
                if isinstance(route, Route) and route.path == PATH and "POST" in (route.methods or ()):
                    self._route = route
        return self._route
