"""The design note's prediction endpoints."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response, status
from starlette.concurrency import run_in_threadpool

from matchcast.api.auth import PredictKey
from matchcast.api.deps import DispatcherDep, Parts, PartsDep, SettingsDep, StoreDep
from matchcast.config import Settings
from matchcast.data.features import FEATURE_VERSION
from matchcast.errors import InvalidInput, MatchesNotFound, MatchNotFound, PredictionTimeout
from matchcast.metrics import PREDICTION_LATENCY, PREDICTION_REQUESTS, PREDICTION_TIMEOUTS
from matchcast.schemas import (
    GRID_DESCRIPTION,
    MATCH_ID_MAX,
    AsyncPredictionRequest,
    AsyncSubmitted,
    BatchPredictionRequest,
    BatchSubmitted,
    BatchTask,
    ErrorBody,
    InlinePredictionRequest,
    IsoDate,
    MatchOut,
    MatchPage,
    ModelInfo,
    Prediction,
    _Deadline,
)
from matchcast.service.callbacks_policy import check_callback_url_for
from matchcast.service.match_index import KnownMatches

router = APIRouter(prefix="/predict", tags=["predict"])
_ERR = {"model": ErrorBody}


class AsyncRefusal(ErrorBody):
    """A 422 of ``POST /predict/async/``: an invalid body, or a schema-valid ``callback_url`` refused on its meaning."""

    type: Literal["validation_error", "invalid_input", "callback_url_refused"]


_ASYNC_422 = {
    "model": AsyncRefusal,
    "description": "Invalid body (`validation_error`); or a `callback_url` while callbacks are off (`invalid_input`: "
    "no MATCHCAST_CALLBACK_SECRET), or one the SSRF policy refuses (`callback_url_refused`)",
}


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a request safely: the same key and body reuse the first request's task",
    ),
]


_SYNC_REQUESTS = PREDICTION_REQUESTS.labels(source="sync")
_ASYNC_REQUESTS = PREDICTION_REQUESTS.labels(source="async")
_SYNC_LATENCY = PREDICTION_LATENCY.labels(source="sync")


async def sync_prediction(parts: Parts, payload: dict[str, object], idempotency_key: str | None = None) -> bytes:
    """A prediction made by a worker within the sync timeout, as the JSON body of the answer."""
    _SYNC_REQUESTS.inc()
    started = time.perf_counter()
    try:
        timeout = parts.settings.sync_timeout_s
        result = await parts.dispatcher.predict(payload, timeout=timeout, idempotency_key=idempotency_key)
    except PredictionTimeout:
        PREDICTION_TIMEOUTS.inc()
        raise
    _SYNC_LATENCY.observe(time.perf_counter() - started)
    # Validated here once; serialised directly (``response_model`` would validate the same object again).
    return Prediction.model_validate(result).model_dump_json().encode()


def stored_match_key(parts: Parts, match_id: int, model_version: str, grid: bool = False) -> str:
    """The automatic idempotency key of a stored match: the match, the model version, the feature version and the
    match's feature revision as the API last read it (so a resubmission after an ingest changed its features
    makes a new prediction), and the grid if asked for."""
    revision = parts.feature_revisions().get(match_id) or "-"
    return f"match:{match_id}:{model_version}:{FEATURE_VERSION}:{revision}" + (":grid" if grid else "")


async def accept_stored(
    parts: Parts,
    match_id: int,
    model: ModelInfo,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    deadline: float | None = None,
    grid: bool = False,
) -> bytes:
    """Queue a prediction of a stored match, as the JSON body of the 202 answer.

    Without an ``idempotency_key``, the key is ``stored_match_key``'s: while such a task is queued, running or
    done, the same task comes back."""
    key = idempotency_key or stored_match_key(parts, match_id, model.version, grid)
    payload: dict[str, object] = {"match_id": match_id, "grid": True} if grid else {"match_id": match_id}
    task_id = await parts.dispatcher.submit(payload, idempotency_key=key, callback_url=callback_url, deadline=deadline)
    _ASYNC_REQUESTS.inc()
    return AsyncSubmitted(task_id=task_id, status_url=f"/monitoring/task_status/{task_id}").model_dump_json().encode()


def deadline_of(body: _Deadline, settings: Settings) -> float | None:
    """A request's deadline as a Unix time; 422 if it has passed or lies beyond the task records' TTL."""
    now = time.time()
    try:
        deadline = body.deadline_ts(now)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if deadline is not None and not now < deadline <= now + settings.task_ttl_s:
        raise InvalidInput(f"the deadline must lie in the future, at most {settings.task_ttl_s} s ahead")
    return deadline


async def _require_match(matches: KnownMatches, match_id: int) -> None:
    if not matches.quick(match_id) and not await run_in_threadpool(matches.contains, match_id):
        raise MatchNotFound(match_id)


@router.get("/matches/", response_model=MatchPage)
async def upcoming_matches(
    store: StoreDep,
    league: Annotated[str | None, Query(max_length=64)] = None,
    date_from: Annotated[IsoDate | None, Query(alias="from")] = None,
    date_to: Annotated[IsoDate | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> MatchPage:
    """Matches without a result, soonest first."""
    total, rows = await run_in_threadpool(
        store.upcoming, league=league, date_from=date_from, date_to=date_to, limit=limit, offset=offset
    )
    items = [MatchOut.model_validate(r, from_attributes=True) for r in rows]
    return MatchPage(total=total, limit=limit, offset=offset, items=items)


@router.get("/matches/{match_id}", response_model=MatchOut, responses={404: _ERR})
async def stored_match(match_id: int, store: StoreDep) -> MatchOut:
    """One stored match, read-only, with its score and result (H, D or A) once known."""
    row = await run_in_threadpool(store.get, match_id) if 1 <= match_id <= MATCH_ID_MAX else None
    if row is None:
        raise MatchNotFound(match_id)
    return MatchOut.model_validate(row, from_attributes=True)


@router.get("/model/info", response_model=ModelInfo, responses={404: _ERR, 503: _ERR})
async def model_info(parts: PartsDep) -> ModelInfo:
    """Registry metadata of the model that serves."""
    return await parts.model_info()


@router.post("/", response_model=Prediction, responses={422: _ERR, 413: _ERR, 503: _ERR, 504: _ERR})
async def predict_inline(
    body: InlinePredictionRequest, parts: PartsDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Predict from features given inline; waits up to the sync timeout. ``grid: true`` adds the score grid."""
    payload = body.model_dump(mode="json", exclude=None if body.grid else {"grid"})
    body_out = await sync_prediction(parts, payload, idempotency_key)
    return Response(body_out, media_type="application/json")


@router.post(
    "/async/",
    response_model=AsyncSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: _ERR, 422: _ASYNC_422, 429: _ERR, 503: _ERR},
)
async def predict_async(
    body: AsyncPredictionRequest, parts: PartsDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Queue a prediction of a stored match; poll ``status_url`` (or stream its ``/events``) for the result.

    With ``deadline`` (or ``ttl_s``), a task not started by then is not computed and ends ``EXPIRED``.
    Idempotent: while a task for the same match, model version and feature revision is queued, running or done,
    the same ``task_id`` comes back and the model does not run again; once an ingest changes the match's features,
    a resubmission makes a new prediction (within ``MATCHCAST_FEATURE_REVISIONS_REFRESH_S``).
    """
    settings = parts.settings
    deadline = deadline_of(body, settings)
    await _require_match(parts.known_matches(), body.match_id)
    model = await parts.model_info()
    if body.callback_url is not None:
        if settings.callback_secret is None:
            raise InvalidInput("callbacks are off: set MATCHCAST_CALLBACK_SECRET to sign them")
        await run_in_threadpool(check_callback_url_for, settings, body.callback_url)
    body_out = await accept_stored(parts, body.match_id, model, idempotency_key, body.callback_url, deadline, body.grid)
    return Response(body_out, status_code=status.HTTP_202_ACCEPTED, media_type="application/json")


@router.post(
    "/async/batch",
    response_model=BatchSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: _ERR, 422: _ERR, 429: _ERR, 503: _ERR},
)
async def predict_async_batch(
    body: BatchPredictionRequest, dispatcher: DispatcherDep, store: StoreDep, settings: SettingsDep, key: PredictKey
) -> BatchSubmitted:
    """Queue up to 1,000 stored matches (e.g. a whole matchday); workers predict them in vectorised chunks.

    The batch is a resource: ``status_url`` gives counts, times, results and failures of all its tasks at once
    (``?format=csv`` the whole table; ``/events`` streams its progress; ``DELETE`` cancels what has not started).
    With ``deadline`` (or ``ttl_s``), tasks not started by then are not computed and end ``EXPIRED``.
    All or nothing: if any match id is unknown, nothing is queued and 404 names them.
    """
    deadline = deadline_of(body, settings)
    wanted = list(dict.fromkeys(body.match_ids))
    known = await run_in_threadpool(store.existing, wanted)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise MatchesNotFound(unknown)
    batch_id, ids = await dispatcher.submit_batch(wanted, deadline=deadline, key=key.key_id if key else None)
    _ASYNC_REQUESTS.inc(len(ids))
    tasks = [BatchTask(match_id=m, task_id=t, status_url=f"/monitoring/task_status/{t}") for m, t in ids.items()]
    return BatchSubmitted(
        count=len(tasks), batch_id=batch_id, status_url=f"/monitoring/batch_status/{batch_id}", tasks=tasks
    )


@router.get("/{match_id}", response_model=Prediction, responses={404: _ERR, 503: _ERR, 504: _ERR})
async def predict_match(
    match_id: int,
    parts: PartsDep,
    grid: Annotated[bool, Query(description=GRID_DESCRIPTION)] = False,
) -> Response:
    """Predict a stored match from its precomputed features; waits up to the sync timeout."""
    if not 1 <= match_id <= MATCH_ID_MAX:
        raise MatchNotFound(match_id)
    await _require_match(parts.known_matches(), match_id)
    payload: dict[str, object] = {"match_id": match_id, "grid": True} if grid else {"match_id": match_id}
    return Response(await sync_prediction(parts, payload), media_type="application/json")
