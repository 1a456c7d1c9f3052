"""Administration: uploading a results or fixtures file (``POST /admin/ingest``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from starlette.concurrency import run_in_threadpool

from matchcast.api.auth import AdminKey
from matchcast.api.deps import DispatcherDep, SettingsDep
from matchcast.config import Settings
from matchcast.data.ingest import decode
from matchcast.errors import UnsupportedMediaType
from matchcast.schemas import AsyncSubmitted, ErrorBody
from matchcast.service.feeds import check_upload

router = APIRouter(tags=["admin"])


class UploadRefusal(ErrorBody):
    """A 422 of ``POST /admin/ingest``: a malformed file, with the place of its first problem."""

    type: Literal["validation_error", "ingest_error"]
    file: str | None = None
    line: int | None = None
    column: str | None = None


CSV_TYPES = frozenset({"text/csv", "application/csv"})
# The documented bound is the default of MATCHCAST_FEED_MAX_BYTES; the API enforces the setting (413).
_MAX_DOC = Settings.model_fields["feed_max_bytes"].default
_BODY = {
    "type": "string",
    "maxLength": _MAX_DOC,
    "description": "A football-data.co.uk layout CSV file",
    # A fixture of the bundled data, as `make up` stores it: ingesting it again changes nothing.
    "examples": ["Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\nE0,2026-05-24,West Ham,Leeds,,,\n"],
}


@router.post(
    "/admin/ingest",
    response_model=AsyncSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": _BODY}}}},
    responses={
        413: {"model": ErrorBody, "description": "Larger than `MATCHCAST_FEED_MAX_BYTES` (`payload_too_large`)"},
        415: {"model": ErrorBody, "description": "The body is not `text/csv` (`unsupported_media_type`)"},
        422: {"model": UploadRefusal, "description": "A malformed file (`ingest_error`: `file`, `line`, `column`)"},
        503: {"model": ErrorBody},
    },
)
async def ingest_upload(
    request: Request,
    key: AdminKey,
    dispatcher: DispatcherDep,
    settings: SettingsDep,
    name: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[\w. -]+$")] = "upload.csv",
    league: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")] = None,
) -> AsyncSubmitted:
    """Ingest a football-data.co.uk layout CSV sent as the `text/csv` body (admin key): checked here (size,
    layout: 422 with file, line and column), then ingested by a maintenance worker. Poll the status URL: its
    `ingest` holds the report (new, updated, rewritten results, unknown teams), or `error` the problem."""
    media = re.split(r"\s*;\s*", request.headers.get("content-type", ""))[0].lower()
    if media not in CSV_TYPES:
        raise UnsupportedMediaType(f"send the file as the request body with Content-Type: text/csv, not {media!r}")
    content = await request.body()
    await run_in_threadpool(check_upload, content, name, league=league, settings=settings)
    task_id = await dispatcher.submit_upload(name, decode(content), league)
    return AsyncSubmitted(task_id=task_id, status_url=f"/monitoring/task_status/{task_id}")
