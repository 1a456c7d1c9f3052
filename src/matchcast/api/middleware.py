"""ASGI middleware: a cap on request bodies, and request metrics by route."""

from __future__ import annotations

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchcast.metrics import REQUEST_LATENCY


async def _reject(send: Send, limit: int) -> None:
    body = orjson.dumps({"type": "payload_too_large", "detail": f"request body exceeds {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether or not they announce their length; the paths in
    ``larger`` (uploads) have limits of their own."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.default, self.larger = app, limit, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _reject(send, limit)
                    return
        # Without a trustworthy length, read the body first (at most ``limit`` bytes), then replay it.
        chunks: list[Message] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                chunks.append(msg)
                break
            seen += len(msg.get("body", b""))
            if seen > limit:
                await _reject(send, limit)
                return
            chunks.append(msg)
            if not msg.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Observe latency by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_LATENCY.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)
