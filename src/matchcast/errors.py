"""The domain's exceptions. No HTTP here: the API maps them to status codes in one place.

MatchcastError
├── NotFound
│   ├── MatchNotFound
│   ├── TaskNotFound
│   └── ModelNotFound
├── InvalidInput
│   ├── IngestError          (file, line, column)
│   └── CallbackUrlRefused
├── PredictionTimeout
├── ServiceUnavailable       (what is missing)
├── Unauthorized             (401: no valid API key)
├── Forbidden                (403: the key's role does not allow it)
└── RateLimited              (429: retry_after_s)
"""

from __future__ import annotations


class MatchcastError(Exception):
    """Base of every error matchcast raises on purpose."""

    type = "matchcast_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(MatchcastError):
    """Something asked for does not exist."""

    type = "not_found"


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


class ModelNotFound(NotFound):
    """No model version carries the requested alias."""

    type = "model_not_found"


class InvalidInput(MatchcastError):
    """Input that matchcast refuses."""

    type = "invalid_input"


class IngestError(InvalidInput):
    """A malformed data file, with the place of the first problem."""

    type = "ingest_error"

    def __init__(self, path: str, line: int, column: str | None, problem: str) -> None:
        where = f"{path}, line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.column, self.problem = path, line, column, problem


class FeaturesNotReady(MatchcastError):
    """A match has no precomputed features yet."""

    type = "features_not_ready"


class PredictionTimeout(MatchcastError):
    """A synchronous prediction did not finish in time."""

    type = "prediction_timeout"


class PredictionFailed(MatchcastError):
    """The worker reported an error for a prediction."""

    type = "prediction_failed"


class DeadLettered(MatchcastError):
    """A task was given up on and dead-lettered."""

    type = "dead_lettered"


class Overloaded(MatchcastError):
    """Too much work is waiting; the caller should come back later."""

    type = "overloaded"

    def __init__(self, detail: str, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Conflict(MatchcastError):
    """The request conflicts with the current state of a resource."""

    type = "conflict"


class ServiceUnavailable(MatchcastError):
    """A service matchcast depends on cannot be reached."""

    type = "service_unavailable"

    def __init__(self, detail: str, missing: list[str] | None = None) -> None:
        super().__init__(detail)
        self.missing = missing or []


class Unauthorized(MatchcastError):
    """No valid API key came with the request (missing, malformed, unknown or revoked)."""

    type = "unauthorized"


class Forbidden(MatchcastError):
    """A valid API key whose role does not allow the request."""

    type = "forbidden"


class RateLimited(MatchcastError):
    """An API key sent more requests than its rate limit allows."""

    type = "rate_limited"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class CallbackUrlRefused(InvalidInput):
    """A callback URL matchcast will not call (scheme, or an address it must not reach)."""

    type = "callback_url_refused"
