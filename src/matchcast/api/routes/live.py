"""Live scores: the prediction log's counted predictions scored against the results (predict key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from matchcast.api.deps import LiveDep
from matchcast.schemas import ErrorBody, LivePredictionPage, LiveReport

router = APIRouter(tags=["monitoring"])


@router.get("/monitoring/live", response_model=LiveReport, responses={503: {"model": ErrorBody}})
async def live(service: LiveDep) -> LiveReport:
    """Per model version (shadow apart) and window: matches scored, RPS, log loss, Brier, accuracy, and the
    league-frequency baseline on the same matches; champion and challenger paired on the same matches."""
    return await run_in_threadpool(service.report)


@router.get("/monitoring/live/predictions", response_model=LivePredictionPage, responses={503: {"model": ErrorBody}})
async def live_predictions(
    service: LiveDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    shadow: Annotated[bool | None, Query(description="Only shadow (true) or served (false) predictions")] = None,
) -> LivePredictionPage:
    """The counted predictions of scored matches from the prediction log, newest match first, with scores."""
    return await run_in_threadpool(lambda: service.predictions(limit=limit, offset=offset, shadow=shadow))
