"""Domain errors as HTTP answers, all with a JSON body ``{"type", "detail"}`` (the table is in ``errors.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from matchcast.errors import (
    Gone,
    IngestError,
    MatchcastError,
    MatchesNotFound,
    Overloaded,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)


def status_of(exc: MatchcastError) -> int:
    """The HTTP status of a domain error (``errors.py`` holds the table)."""
    return exc.status


def answer_of(exc: MatchcastError) -> tuple[int, dict[str, object], dict[str, str] | None]:
    """A domain error's HTTP answer: status, JSON body and extra headers."""
    headers = {"Retry-After": "1"} if isinstance(exc, ServiceUnavailable) else None
    if isinstance(exc, Overloaded | RateLimited):
        headers = {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="matchcast"'}
    body: dict[str, object] = {"type": exc.type, "detail": exc.detail}
    if isinstance(exc, ServiceUnavailable):
        body["missing"] = exc.missing
    if isinstance(exc, IngestError) and hasattr(exc, "line"):  # the place of the first problem in the file
        body |= {"file": exc.path, "line": exc.line, "column": exc.column}
    if isinstance(exc, MatchesNotFound):
        body["match_ids"] = exc.match_ids
    if isinstance(exc, Gone):
        body["expired_at"] = _iso(exc.expired_at)
        if exc.expired_after is not None:
            body["expired_after"] = _iso(exc.expired_after)
    return status_of(exc), body, headers


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path, for ``Allow``: routing's 405 names only the first route's."""
    routes = request.app.router.routes
    allowed = [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    return ", ".join(allowed)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(MatchcastError)
    async def _domain(_: Request, exc: MatchcastError) -> JSONResponse:
        status, body, headers = answer_of(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"type": "validation_error", "detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI cannot parse (e.g. not UTF-8): invalid input like any other
            detail = [{"loc": ["body"], "msg": str(exc.detail), "type": "body_unparsable"}]
            return JSONResponse({"type": "validation_error", "detail": detail}, status_code=422)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return JSONResponse({"type": kind, "detail": exc.detail}, status_code=exc.status_code, headers=headers or None)
