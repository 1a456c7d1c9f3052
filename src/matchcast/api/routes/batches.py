"""A batch as a resource: its status (JSON, or the whole result table as CSV) and its cancellation."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status

from matchcast.api.auth import PredictKey
from matchcast.api.deps import DispatcherDep
from matchcast.errors import Forbidden
from matchcast.schemas import BatchCancelled, BatchStatus, ErrorBody, GoneBody, Prediction
from matchcast.tasks.batches import BATCH_PAGE_MAX, summarize, task_rows

router = APIRouter(tags=["monitoring"])
BatchId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
CSV_COLUMNS = (
    "match_id",
    "task_id",
    "status",
    "home",
    "draw",
    "away",
    "model_version",
    "feature_version",
    "feature_revision",
    "features_as_of",
    "predicted_at",
    "home_goals",
    "away_goals",
    "result",
    "error",
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No batch with this id was issued (`batch_not_found`)"},
    410: {"model": GoneBody, "description": "The batch expired (`task_gone`, `expired_at`)"},
    503: {"model": ErrorBody},
}


@router.get(
    "/monitoring/batch_status/{batch_id}",
    response_model=BatchStatus,
    responses={**_ERRORS, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def batch_status(
    batch_id: BatchId,
    dispatcher: DispatcherDep,
    offset: Annotated[int, Query(ge=0, le=BATCH_PAGE_MAX)] = 0,
    limit: Annotated[int, Query(ge=0, le=BATCH_PAGE_MAX)] = 100,
    format: Annotated[
        Literal["json", "csv"], Query(description="`csv`: every task of the batch, one row each")
    ] = "json",
) -> Response:
    """Counts by state, done fraction, times, and a page of results and of failures (``?format=csv``: all)."""
    record, metas = await dispatcher.batch(batch_id)
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for match_id, s in task_rows(record, metas):
            p = s.result
            probs = (p.probabilities.home, p.probabilities.draw, p.probabilities.away) if p else ("", "", "")
            writer.writerow((match_id, s.task_id, s.status, *probs, *_made_from(p), s.error or ""))
        headers = {"Content-Disposition": f'attachment; filename="batch-{batch_id}.csv"'}
        return Response(out.getvalue(), media_type="text/csv", headers=headers)
    body = summarize(batch_id, record, metas, offset, limit)
    return Response(body.model_dump_json(), media_type="application/json")


def _made_from(p: Prediction | None) -> tuple[object, ...]:
    """The CSV cells from ``model_version`` to ``result``: what a prediction was made from, and the score if played."""
    if p is None:
        return ("",) * 8
    played = (p.result.home_goals, p.result.away_goals, p.result.result) if p.result else ("", "", "")
    made = (p.model_version, p.feature_version or "", p.feature_revision or "", p.features_as_of or "")
    return (*made, p.predicted_at.isoformat(), *played)


async def _cancel(batch_id: str, dispatcher: DispatcherDep, key: PredictKey) -> BatchCancelled:
    record, _ = await dispatcher.batch(batch_id)
    if key is not None and key.role != "admin" and key.key_id != record.get("key"):
        raise Forbidden(f"only the key that submitted batch {batch_id}, or an admin key, may cancel it")
    return await dispatcher.cancel_batch(batch_id)


_CANCEL = {
    "response_model": BatchCancelled,
    "status_code": status.HTTP_202_ACCEPTED,
    "responses": {**_ERRORS, 403: {"model": ErrorBody}},
}


@router.delete("/monitoring/batch_status/{batch_id}", **_CANCEL)  # type: ignore[arg-type]
async def cancel_batch(batch_id: BatchId, dispatcher: DispatcherDep, key: PredictKey) -> BatchCancelled:
    """Cancel the batch's tasks that have not started (they end ``REVOKED``); admin, or the key that submitted it."""
    return await _cancel(batch_id, dispatcher, key)


@router.post("/monitoring/batch_status/{batch_id}/cancel", **_CANCEL)  # type: ignore[arg-type]
async def cancel_batch_post(batch_id: BatchId, dispatcher: DispatcherDep, key: PredictKey) -> BatchCancelled:
    """The same as ``DELETE /monitoring/batch_status/{batch_id}``, for clients that cannot send DELETE."""
    return await _cancel(batch_id, dispatcher, key)
