"""The design note's prediction endpoints."""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from starlette.concurrency import run_in_threadpool

from matchcast.api.deps import CatalogDep, DispatcherDep, SettingsDep, StoreDep
from matchcast.errors import MatchNotFound, PredictionTimeout
from matchcast.metrics import PREDICTION_LATENCY, PREDICTION_REQUESTS, PREDICTION_TIMEOUTS
from matchcast.schemas import (
    AsyncPredictionRequest,
    AsyncSubmitted,
    ErrorBody,
    InlinePredictionRequest,
    MatchOut,
    MatchPage,
    ModelInfo,
    Prediction,
)

router = APIRouter(prefix="/predict", tags=["predict"])
MatchId = Annotated[int, Query(ge=1, le=2**31 - 1)]
_ERR = {"model": ErrorBody}


async def _sync(dispatcher: DispatcherDep, settings: SettingsDep, payload: dict[str, object]) -> Prediction:
    PREDICTION_REQUESTS.labels(source="sync").inc()
    started = time.perf_counter()
    try:
        result = await dispatcher.predict(payload, timeout=settings.sync_timeout_s)
    except PredictionTimeout:
        PREDICTION_TIMEOUTS.inc()
        raise
    PREDICTION_LATENCY.labels(source="sync").observe(time.perf_counter() - started)
    return Prediction.model_validate(result)


async def _require_match(store: StoreDep, match_id: int) -> None:
    if await run_in_threadpool(store.get, match_id) is None:
        raise MatchNotFound(match_id)


@router.get("/matches/", response_model=MatchPage)
async def upcoming_matches(
    store: StoreDep,
    league: Annotated[str | None, Query(max_length=64)] = None,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> MatchPage:
    """Matches without a result, soonest first."""
    total, rows = await run_in_threadpool(
        store.upcoming, league=league, date_from=date_from, date_to=date_to, limit=limit, offset=offset
    )
    items = [MatchOut.model_validate(r, from_attributes=True) for r in rows]
    return MatchPage(total=total, limit=limit, offset=offset, items=items)


@router.get("/model/info", response_model=ModelInfo, responses={404: _ERR, 503: _ERR})
async def model_info(catalog: CatalogDep) -> ModelInfo:
    """Registry metadata of the model that serves."""
    return await run_in_threadpool(catalog.info)


@router.post("/", response_model=Prediction, responses={422: _ERR, 413: _ERR, 503: _ERR, 504: _ERR})
async def predict_inline(body: InlinePredictionRequest, dispatcher: DispatcherDep, settings: SettingsDep) -> Prediction:
    """Predict from features given inline; waits up to the sync timeout."""
    return await _sync(dispatcher, settings, body.model_dump(mode="json"))


@router.post(
    "/async/",
    response_model=AsyncSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: _ERR, 422: _ERR, 503: _ERR},
)
async def predict_async(
    body: AsyncPredictionRequest, request: Request, dispatcher: DispatcherDep, store: StoreDep
) -> AsyncSubmitted:
    """Queue a prediction of a stored match; poll ``status_url`` for the result."""
    await _require_match(store, body.match_id)
    task_id = await dispatcher.submit({"match_id": body.match_id})
    PREDICTION_REQUESTS.labels(source="async").inc()
    return AsyncSubmitted(task_id=task_id, status_url=f"/monitoring/task_status/{task_id}")


@router.get("/{match_id}", response_model=Prediction, responses={404: _ERR, 503: _ERR, 504: _ERR})
async def predict_match(match_id: int, dispatcher: DispatcherDep, settings: SettingsDep, store: StoreDep) -> Prediction:
    """Predict a stored match from its precomputed features; waits up to the sync timeout."""
    if not 1 <= match_id <= 2**31 - 1:
        raise MatchNotFound(match_id)
    await _require_match(store, match_id)
    return await _sync(dispatcher, settings, {"match_id": match_id})
