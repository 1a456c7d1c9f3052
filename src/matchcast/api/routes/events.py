"""Server-sent event streams of a task's and a batch's state changes (``api/events.py`` says how they work)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from matchcast.api.auth import PredictKey
from matchcast.api.deps import DispatcherDep
from matchcast.api.events import Watch, batch_events, batch_states, task_events
from matchcast.api.routes.batches import BatchId
from matchcast.api.routes.monitoring import TaskId
from matchcast.schemas import ErrorBody, GoneBody

router = APIRouter(tags=["monitoring"])
T = TypeVar("T")
LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=64, description="Resume after this event (sent again on reconnect)"),
]
EVENT = {  # one server-sent event, as a client's parser gives it
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "Send it back as `Last-Event-ID` to resume"},
        "event": {"type": "string", "enum": ["status", "progress", "end"]},
        "data": {"type": "string", "description": "JSON: a task status, or a batch's counts and changed tasks"},
    },
}
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: `status` (task) or `progress` (batch) events, then `end`",
        "content": {"text/event-stream": {"schema": EVENT}},
    },
    404: {"model": ErrorBody},
    410: {"model": GoneBody},
    429: {"model": ErrorBody, "description": "Too many open streams for this key (`too_many_streams`)"},
    503: {"model": ErrorBody},
}
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _owner(request: Request, key: Any) -> str:
    return f"key:{key.key_id}" if key is not None else f"client:{request.client.host if request.client else '-'}"


async def _open(
    request: Request, dispatcher: DispatcherDep, key: Any, kind: str, ident: str, read: Callable[[], Awaitable[T]]
) -> tuple[contextlib.ExitStack, Watch, T]:
    """Hold a stream watching ``ident`` (429 past the cap), then ``read`` its first state (404/410 release it)."""
    stack = contextlib.ExitStack()
    watch: Watch = stack.enter_context(dispatcher.hub.watch(_owner(request, key), kind, ident))
    try:  # watching before reading: a change in between wakes the stream
        async with watch.reads:
            return stack, watch, await read()
    except BaseException:
        stack.close()
        raise


def _stream(stack: contextlib.ExitStack, events: AsyncIterator[bytes]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        with stack:  # released when the stream ends or the client goes away
            async for chunk in events:
                yield chunk

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)


@router.get("/monitoring/task_status/{task_id}/events", response_class=StreamingResponse, responses=_STREAM)
async def task_status_events(
    task_id: TaskId, request: Request, dispatcher: DispatcherDep, key: PredictKey, last_event_id: LastEventId = None
) -> StreamingResponse:
    """Every state change of a task, as server-sent events, until a final state; 404 or 410 as the status."""
    stack, watch, first = await _open(request, dispatcher, key, "task", task_id, lambda: dispatcher.status(task_id))
    keepalive = dispatcher.settings.sse_keepalive_s
    return _stream(stack, task_events(dispatcher.records, watch, first, last_event_id, keepalive))


@router.get("/monitoring/batch_status/{batch_id}/events", response_class=StreamingResponse, responses=_STREAM)
async def batch_status_events(
    batch_id: BatchId, request: Request, dispatcher: DispatcherDep, key: PredictKey, last_event_id: LastEventId = None
) -> StreamingResponse:
    """A batch's progress as server-sent events (a snapshot, then each change) until every task is final."""

    async def read() -> tuple[str, dict[str, str], dict[str, int]]:
        cursor = await dispatcher.records.last_batch_event(batch_id)  # before the states: nothing slips between
        return (cursor, *batch_states(*await dispatcher.batch(batch_id)))

    stack, watch, snapshot = await _open(request, dispatcher, key, "batch", batch_id, read)
    keepalive = dispatcher.settings.sse_keepalive_s
    return _stream(stack, batch_events(dispatcher.records, watch, batch_id, snapshot, last_event_id, keepalive))
