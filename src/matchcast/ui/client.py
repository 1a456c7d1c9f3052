"""The UI's HTTP client: every call the UI makes to the API, and every API error turned into one sentence.

The UI is a separate program. It knows the API only by URL and reads three environment variables, which
``matchcast ui`` sets from matchcast's settings: ``MATCHCAST_UI_API_URL``, ``MATCHCAST_UI_API_KEY`` (sent as
``X-API-Key`` when set) and ``MATCHCAST_HOME`` (where ``matchcast evaluate`` leaves the files the Model page shows).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Longer than the API's sync timeout (30 s by default), so the API's 504 arrives before our own timeout.
DEFAULT_TIMEOUT_S = 45.0
OUTCOMES = ("home", "draw", "away")
# A 429 (rate limited) is waited out this many times, ``Retry-After`` seconds each (at most MAX_RETRY_AFTER_S).
RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER_S = 5.0


@dataclass(frozen=True)
class UiConfig:
    """What the UI is told from outside."""

    api_url: str = DEFAULT_API_URL
    api_key: str | None = None
    home: Path = Path.home() / ".matchcast"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UiConfig:
        """Read ``MATCHCAST_UI_API_URL``, ``MATCHCAST_UI_API_KEY`` and ``MATCHCAST_HOME``."""
        env = os.environ if env is None else env
        return cls(
            api_url=(env.get("MATCHCAST_UI_API_URL") or DEFAULT_API_URL).rstrip("/"),
            api_key=env.get("MATCHCAST_UI_API_KEY") or None,
            home=Path(env.get("MATCHCAST_HOME") or Path.home() / ".matchcast").expanduser(),
        )


class ApiError(Exception):
    """A failed call, with a sentence fit to show people (``message``) and what the API said."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        detail: Any = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.type, self.detail = message, status, type, detail
        self.body = body or {}  # the whole error body (e.g. a batch's unknown ``match_ids``)


@dataclass(frozen=True)
class FeatureField:
    """One inline feature as the API's OpenAPI schema describes it."""

    name: str
    title: str
    minimum: float
    maximum: float
    description: str

    @property
    def midpoint(self) -> float:
        """Halfway between the bounds."""
        return (self.minimum + self.maximum) / 2


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 1.0


def _validation_message(detail: Any) -> str:
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for item in detail:
        loc = [str(x) for x in item.get("loc", []) if x not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {item.get('msg')}")
    return "; ".join(parts)


def error_of(response: httpx.Response) -> ApiError:
    """The API's error answer as an ``ApiError`` whose message says what happened and what to do."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    kind, detail = body.get("type"), body.get("detail", response.text[:200])
    status = response.status_code
    if status == 504:
        msg = (
            "No prediction within the API's time limit (504 prediction_timeout): the workers are busy or down. "
            "Try again in a moment, or submit it on the Batch page."
        )
    elif status == 503:
        missing = body.get("missing") or []
        what = f" ({', '.join(missing)} unreachable)" if missing else ""
        msg = f"The prediction service is unavailable{what} (503). Try again in a moment."
    elif status == 422:
        msg = f"The API refused the input: {_validation_message(detail)}"
    elif status == 404:
        msg = f"Not found: {detail}"
    elif status == 413:
        msg = f"Request too large: {detail}"
    elif status == 401:
        msg = (
            f"The API wants a valid API key ({detail}). Give the UI one in MATCHCAST_UI_API_KEY "
            "(`matchcast keys create --role predict`)."
        )
    elif status == 403:
        msg = f"The UI's API key may not do this ({detail})."
    elif status == 429:
        msg = f"Too many requests for the UI's API key ({detail}). Try again in a moment."
    else:
        msg = f"The API answered {status} {kind or ''}: {detail}".replace("  ", " ")
    return ApiError(msg, status=status, type=kind, detail=detail, body=body)


class ApiClient:
    """The API's endpoints as methods returning parsed JSON; any failure raises ``ApiError``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    @classmethod
    def from_config(cls, config: UiConfig) -> ApiClient:
        """A client for the configured API."""
        return cls(config.api_url, api_key=config.api_key)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            response = self._send(method, path, **kwargs)
            if response.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                break
            time.sleep(_retry_after(response))
        if response.status_code >= 400:
            raise error_of(response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"The API answered {method} {path} with something that is not JSON.") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ApiError(
                f"The API at {self.base_url} did not answer in time ({method} {path}). Try again in a moment."
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                f"The API at {self.base_url} is not reachable ({type(exc).__name__}). "
                "Is `matchcast up` (or `matchcast api`) running? The UI's API is set by MATCHCAST_UI_API_URL."
            ) from None

    # --- the design note's endpoints -------------------------------------------------------------------------

    def upcoming(
        self,
        *,
        league: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``GET /predict/matches/``: a page of upcoming matches, soonest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if league:
            params["league"] = league
        if date_from:
            params["from"] = date_from
        if date_to:
            params["to"] = date_to
        page: dict[str, Any] = self._call("GET", "/predict/matches/", params=params)
        return page

    def all_upcoming(
        self,
        *,
        league: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        cap: int = 1000,
    ) -> list[dict[str, Any]]:
        """Every upcoming match matching the filters (at most ``cap``), paging through the listing."""
        items: list[dict[str, Any]] = []
        while len(items) < cap:
            page = self.upcoming(
                league=league, date_from=date_from, date_to=date_to, offset=len(items), limit=min(200, cap - len(items))
            )
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                break
        return items

    def match(self, match_id: int) -> dict[str, Any]:
        """``GET /predict/matches/{match_id}``: one stored match with its result once known."""
        out: dict[str, Any] = self._call("GET", f"/predict/matches/{match_id}")
        return out

    def predict_match(self, match_id: int) -> dict[str, Any]:
        """``GET /predict/{match_id}?grid=true``: a synchronous prediction of a stored match, with its grid."""
        out: dict[str, Any] = self._call("GET", f"/predict/{match_id}", params={"grid": "true"})
        return out

    def predict_inline(
        self,
        features: Mapping[str, float],
        *,
        home_team: str | None = None,
        away_team: str | None = None,
        date: str | None = None,
    ) -> dict[str, Any]:
        """``POST /predict/``: a synchronous prediction from inline features."""
        body: dict[str, Any] = {"features": dict(features), "grid": True}
        for key, value in (("home_team", home_team), ("away_team", away_team), ("date", date)):
            if value:
                body[key] = value
        out: dict[str, Any] = self._call("POST", "/predict/", json=body)
        return out

    def submit(self, match_id: int) -> dict[str, Any]:
        """``POST /predict/async/``: queue a prediction; the answer has ``task_id`` and ``status_url``."""
        out: dict[str, Any] = self._call("POST", "/predict/async/", json={"match_id": match_id})
        return out

    def submit_batch(self, match_ids: list[int]) -> dict[str, Any]:
        """``POST /predict/async/batch``: queue many; the answer has ``batch_id``, ``status_url`` and each task."""
        out: dict[str, Any] = self._call("POST", "/predict/async/batch", json={"match_ids": match_ids})
        return out

    def batch_status(self, status_url: str, *, limit: int = 1000) -> dict[str, Any]:
        """``GET /monitoring/batch_status/{batch_id}``: counts, and (up to ``limit``) results and failures."""
        out: dict[str, Any] = self._call("GET", status_url, params={"limit": limit})
        return out

    def task_status(self, status_url: str) -> dict[str, Any]:
        """``GET /monitoring/task_status/{task_id}`` (the ``status_url`` of a submission)."""
        out: dict[str, Any] = self._call("GET", status_url)
        return out

    def live(self) -> dict[str, Any]:
        """``GET /monitoring/live``: live scores per model version and window, from the prediction log."""
        out: dict[str, Any] = self._call("GET", "/monitoring/live")
        return out

    def live_predictions(self, *, limit: int = 200, shadow: bool = False) -> dict[str, Any]:
        """``GET /monitoring/live/predictions``: the counted predictions of scored matches, newest first."""
        params = {"limit": str(limit), "shadow": "true" if shadow else "false"}
        out: dict[str, Any] = self._call("GET", "/monitoring/live/predictions", params=params)
        return out

    def model_info(self) -> dict[str, Any]:
        """``GET /predict/model/info``: registry metadata of the serving model."""
        out: dict[str, Any] = self._call("GET", "/predict/model/info")
        return out

    def inline_features(self) -> list[FeatureField]:
        """The inline features and their bounds, from the API's OpenAPI schema (component ``InlineFeatures``)."""
        spec = self._call("GET", "/openapi.json")
        try:
            schema = spec["components"]["schemas"]["InlineFeatures"]
            props: dict[str, dict[str, Any]] = schema["properties"]
            return [
                FeatureField(
                    name=name,
                    title=str(p.get("title") or name),
                    minimum=float(p["minimum"]),
                    maximum=float(p["maximum"]),
                    description=str(p.get("description") or ""),
                )
                for name, p in props.items()
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(f"The API's OpenAPI schema has no usable InlineFeatures component ({exc!r}).") from None
