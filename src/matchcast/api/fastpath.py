"""The two hottest routes in their everyday form, answered below FastAPI's per-request machinery.

``GET /predict/{match_id}`` and ``POST /predict/async/`` each come down to a lookup, a key check and a place in
the next group: tens of microseconds. The FastAPI route around them (routing, the request object, dependency
and body validation, the response class) costs several times that, and bounds how many requests an API process
answers per second.

The everyday form: a stored match (``GET /predict/{match_id}``, or a JSON body that is exactly
``{"match_id": <integer>}``), an API key of the predict (or admin) role verified in the last
``MATCHCAST_API_KEY_CACHE_S`` seconds (or auth off), no ``Idempotency-Key`` and no ``callback_url``, and for
async the serving model's metadata cached. Only such a request is answered here, by the same functions the
routes call (``sync_prediction``, ``accept_stored``), so body and status are the same.

Everything else goes on, body replayed, to the FastAPI route, which stays the reference and the one the OpenAPI
schema documents: a body to validate, a key to look up, an unknown match, a rate limit to refuse. The only errors
answered here are those of the work itself (504 timeout, 503 broker or result backend down, 429 backlog full, a
prediction's own 404 or 409), rendered by ``errors.answer_of`` as the route would. ``MATCHCAST_API_FAST_PATH=false``
sends every request through the routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchcast.api.access import REFUSALS, admit, presented_key, required_role
from matchcast.api.deps import Parts
from matchcast.api.errors import answer_of
from matchcast.api.routes.predict import accept_stored, sync_prediction
from matchcast.errors import MatchcastError
from matchcast.schemas import MATCH_ID_MAX

ASYNC_PATH = "/predict/async/"
SYNC_PREFIX = "/predict/"
SYNC_TEMPLATE = "/predict/{match_id}"
_WANTED = frozenset({b"content-type", b"authorization", b"x-api-key", b"idempotency-key"})
_MATCH_ID_DIGITS = len(str(MATCH_ID_MAX))


def _is_match_id(text: str) -> bool:
    """At most as many ASCII digits as ``MATCH_ID_MAX`` has (``str.isdigit`` alone also accepts "²", which ``int``
    refuses; ``int`` refuses strings past 4,300 digits)."""
    return len(text) <= _MATCH_ID_DIGITS and text.isascii() and text.isdigit()


def _start(status: int, body: bytes, extra: dict[str, str] | None = None) -> dict[str, Any]:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": headers}


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers the fast path looks at; None if one is repeated (the route decides what that means)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            if name in found:
                return None
            found[name] = value
    return found


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _admitted(scope: Scope, found: dict[bytes, bytes], parts: Parts, template: str) -> bool:
    """Key and rate limit decided as the route decides them (``access``), from a cached key verdict only; True once
    a token is taken. Any refusal, or a verdict to look up, goes to the route, which answers it: a token refused
    here is refused there again without a second one taken."""
    settings, keys, limiter = parts.settings, parts.keys, parts.limiter
    role = required_role(scope["method"], template, settings)
    if role is None:
        return True
    if limiter is None:
        return False
    key = None
    try:
        if settings.auth != "off":
            if keys is None:
                return False
            token = presented_key(_latin1(found.get(b"authorization")), _latin1(found.get(b"x-api-key")))
            hit, key = keys.cached(token)
            if not hit:
                return False
        admit(settings, limiter, role, key, scope.get("client"))
    except REFUSALS:
        return False
    return True


class FastPaths:
    """ASGI middleware: answers everyday sync and async prediction requests itself; passes on everything else."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app, self.enabled = app, enabled
        self._routes: dict[tuple[str, str], Route] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == ASYNC_PATH and method == "POST":
                await self._async(scope, receive, send)
                return
            tail = path[len(SYNC_PREFIX) :]
            if method == "GET" and path.startswith(SYNC_PREFIX) and _is_match_id(tail) and not scope["query_string"]:
                await self._sync(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _sync(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: Parts | None = getattr(scope["app"].state, "parts", None)
        found = _headers(scope)
        match_id = int(scope["path"][len(SYNC_PREFIX) :])
        if (
            parts is None
            or found is None
            or b"idempotency-key" in found
            or not 1 <= match_id <= MATCH_ID_MAX
            or not parts.known_matches().quick(match_id)
            or not _admitted(scope, found, parts, SYNC_TEMPLATE)
        ):
            await self.app(scope, receive, send)
            return
        self._label(scope, "GET", SYNC_TEMPLATE)
        await self._answer(send, 200, lambda: sync_prediction(parts, {"match_id": match_id}))

    async def _async(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[Message] = []  # the body (BodyLimit, outside, has capped its size already)
        while True:
            msg = await receive()
            chunks.append(msg)
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                break
        parts: Parts | None = getattr(scope["app"].state, "parts", None)
        model = None if parts is None else parts.catalog.fresh()
        match_id = None if parts is None or model is None else self._everyday_async(scope, chunks, parts)
        if match_id is None or parts is None or model is None:

            async def replay() -> Message:
                return chunks.pop(0) if chunks else await receive()

            await self.app(scope, replay, send)
            return
        self._label(scope, "POST", ASYNC_PATH)
        await self._answer(send, 202, lambda: accept_stored(parts, match_id, model))

    @staticmethod
    def _everyday_async(scope: Scope, chunks: list[Message], parts: Parts) -> int | None:
        """The match id if this submission is the everyday form, with its rate-limit token taken; else None."""
        found = _headers(scope)
        if found is None or b"idempotency-key" in found:
            return None
        if not found.get(b"content-type", b"").startswith(b"application/json"):
            return None
        try:
            data = orjson.loads(b"".join(m.get("body", b"") for m in chunks if m["type"] == "http.request"))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or len(data) != 1:
            return None
        match_id = data.get("match_id")
        if type(match_id) is not int or not 1 <= match_id <= MATCH_ID_MAX:
            return None
        if not parts.known_matches().quick(match_id):
            return None
        return match_id if _admitted(scope, found, parts, ASYNC_PATH) else None

    @staticmethod
    async def _answer(send: Send, status: int, work: Callable[[], Awaitable[bytes]]) -> None:
        try:
            body = await work()
        except MatchcastError as exc:
            status, error, extra = answer_of(exc)
            body = orjson.dumps(error)
            await send(_start(status, body, extra))
        else:
            await send(_start(status, body))
        await send({"type": "http.response.body", "body": body})

    def _label(self, scope: Scope, method: str, template: str) -> None:
        """Set the route, as routing would: RequestMetrics labels requests by its path template."""
        route = self._routes.get((method, template))
        if route is None:
            for r in scope["app"].routes:
                if isinstance(r, Route) and r.path == template and method in (r.methods or ()):
                    self._routes[(method, template)] = route = r
        scope["route"] = route
