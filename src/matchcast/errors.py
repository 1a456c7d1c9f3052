"""The domain's exceptions, and the one table of what each means on the wire.

Each error has a ``type`` slug (the ``type`` of the API's JSON error body) and the HTTP ``status`` it is
answered with. The same table maps errors back from a worker: a failure record or a grouped answer names its
error, and ``from_wire`` rebuilds it, so a ``MatchNotFound`` raised in a worker reaches the caller as
``match_not_found`` (404), as if the API had raised it.

MatchcastError                  matchcast_error        500
├── NotFound                    not_found              404
│   ├── MatchNotFound           match_not_found
│   ├── TaskNotFound            task_not_found
│   ├── BatchNotFound           batch_not_found
│   ├── MatchesNotFound         matches_not_found      (match_ids: a batch's unknown matches)
│   └── ModelNotFound           model_not_found
├── Gone                        task_gone              410   (expired_at: kept a while after expiry)
├── InvalidInput                invalid_input          422
│   ├── IngestError             ingest_error           (file, line, column)
│   ├── UnsupportedMediaType    unsupported_media_type 415
│   └── CallbackUrlRefused      callback_url_refused
├── FeaturesNotReady            features_not_ready     409
├── Conflict                    conflict               409
├── PredictionTimeout           prediction_timeout     504
├── PredictionFailed            prediction_failed      500
├── DeadLettered                dead_lettered          500
├── FeedError                   feed_error             502   (reason: unreachable, http_status, too_large, ...)
├── Overloaded                  overloaded             429   (retry_after_s)
├── ServiceUnavailable          service_unavailable    503   (what is missing)
├── Unauthorized                unauthorized           401   (no valid API key)
├── Forbidden                   forbidden              403   (the key's role does not allow it)
└── RateLimited                 rate_limited           429   (retry_after_s)
    └── TooManyStreams          too_many_streams       429   (open event streams per key and process)
"""

from __future__ import annotations


class MatchcastError(Exception):
    """Base of every error matchcast raises on purpose."""

    type = "matchcast_error"
    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(MatchcastError):
    """Something asked for does not exist."""

    type = "not_found"
    status = 404


class MatchNotFound(NotFound):
    """No match with this id in the store."""

    type = "match_not_found"

    def __init__(self, match_id: int) -> None:
        super().__init__(f"no match with match_id={match_id}")
        self.match_id = match_id


class TaskNotFound(NotFound):
    """A task id that was never issued, or has expired."""

    type = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with task_id={task_id!r} (never issued, or expired)")
        self.task_id = task_id


class BatchNotFound(NotFound):
    """A batch id that was never issued."""

    type = "batch_not_found"

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with batch_id={batch_id!r} (never issued, or expired long ago)")


class MatchesNotFound(NotFound):
    """Match ids of a batch that are not in the store (nothing of the batch was queued)."""

    type = "matches_not_found"
    match_ids: list[int] = []  # read only: instances set their own

    def __init__(self, match_ids: list[int]) -> None:
        super().__init__(f"unknown match ids (nothing was queued): {match_ids[:20]}")
        self.match_ids = match_ids


class Gone(MatchcastError):
    """A task or batch that existed, whose record and result expired between ``expired_after`` and ``expired_at``
    (Unix times: its tombstone knows the hour the id was issued in, not the second)."""

    type = "task_gone"
    status = 410
    expired_at = 0.0
    expired_after: float | None = None

    def __init__(self, detail: str, expired_at: float = 0.0, expired_after: float | None = None) -> None:
        super().__init__(detail)
        self.expired_at, self.expired_after = expired_at, expired_after


class ModelNotFound(NotFound):
    """No model version carries the requested alias."""

    type = "model_not_found"


class InvalidInput(MatchcastError):
    """Input that matchcast refuses."""

    type = "invalid_input"
    status = 422


class IngestError(InvalidInput):
    """A malformed data file, with the place of the first problem."""

    type = "ingest_error"

    def __init__(self, path: str, line: int, column: str | None, problem: str) -> None:
        where = f"{path}, line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.column, self.problem = path, line, column, problem


class UnsupportedMediaType(InvalidInput):
    """A request body of a content type the route does not take."""

    type = "unsupported_media_type"
    status = 415


class FeaturesNotReady(MatchcastError):
    """A match has no precomputed features yet."""

    type = "features_not_ready"
    status = 409


class PredictionTimeout(MatchcastError):
    """A synchronous prediction did not finish in time."""

    type = "prediction_timeout"
    status = 504


class PredictionFailed(MatchcastError):
    """The worker reported an error for a prediction."""

    type = "prediction_failed"


class DeadLettered(MatchcastError):
    """A task was given up on and dead-lettered."""

    type = "dead_lettered"


class FeedError(MatchcastError):
    """A feed that could not be read, or whose file was refused; ``reason`` is a short slug for metrics."""

    type = "feed_error"
    status = 502
    reason = "error"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Overloaded(MatchcastError):
    """Too much work is waiting; the caller should come back later."""

    type = "overloaded"
    status = 429
    retry_after_s = 5

    def __init__(self, detail: str, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Conflict(MatchcastError):
    """The request conflicts with the current state of a resource."""

    type = "conflict"
    status = 409


class ServiceUnavailable(MatchcastError):
    """A service matchcast depends on cannot be reached."""

    type = "service_unavailable"
    status = 503
    missing: list[str] = []  # read only: instances set their own

    def __init__(self, detail: str, missing: list[str] | None = None) -> None:
        super().__init__(detail)
        self.missing = missing or []


class Unauthorized(MatchcastError):
    """No valid API key came with the request (missing, malformed, unknown or revoked)."""

    type = "unauthorized"
    status = 401


class Forbidden(MatchcastError):
    """A valid API key whose role does not allow the request."""

    type = "forbidden"
    status = 403


class RateLimited(MatchcastError):
    """An API key sent more requests than its rate limit allows."""

    type = "rate_limited"
    status = 429
    retry_after_s = 1

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooManyStreams(RateLimited):
    """An API key holds as many open event streams on this API process as it may."""

    type = "too_many_streams"


class CallbackUrlRefused(InvalidInput):
    """A callback URL matchcast will not call (scheme, or an address it must not reach)."""

    type = "callback_url_refused"


def _all(cls: type[MatchcastError]) -> list[type[MatchcastError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _all(sub))]


# Every error by its ``type`` slug and by its class name (what a Celery failure record names).
WIRE: dict[str, type[MatchcastError]] = {name: cls for cls in _all(MatchcastError) for name in (cls.type, cls.__name__)}


def from_wire(name: str | None, detail: str) -> MatchcastError | None:
    """The error a worker reported by slug or class name, with its detail; None if matchcast has no such error."""
    cls = WIRE.get(name or "")
    if cls is None:
        return None
    exc = cls.__new__(cls)  # the detail as reported: constructors that take e.g. a match id are not rerun
    MatchcastError.__init__(exc, detail)
    return exc
