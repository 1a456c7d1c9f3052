"""Progress pushed, not polled: server-sent event streams of a task's or a batch's state changes.

Workers say what changed through Redis (Celery publishes a single task's result records; a chunk's outcomes, an
``EXPIRED`` task and a cancelled batch are announced on ``matchcast:events``). The API process's one listener
(``api/listener.py``) hears both and tells the ``EventHub``, which wakes the streams watching those ids: no
stream polls. A woken stream reads what changed once (a task's status; a batch's new event-stream entries) and
sends it.

- A task stream sends the task's status (as ``GET /monitoring/task_status/{id}`` answers it) on every change of
  state; the event id is the state, so a client resuming with ``Last-Event-ID`` is sent the state only if it moved.
- A batch stream first sends a snapshot (every task that is not ``PENDING``, with the counts), then each entry of
  the batch's Redis Stream as it comes; event ids are the stream's ids, so ``Last-Event-ID`` replays exactly what a
  client missed (in one event).
- Both end with ``event: end`` once everything is final, send a comment every ``MATCHCAST_SSE_KEEPALIVE_S`` while
  quiet, and count against ``MATCHCAST_SSE_STREAMS_PER_KEY`` open streams per key and process (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from matchcast.errors import TooManyStreams
from matchcast.metrics import SSE_EVENTS, SSE_REFUSED, SSE_STREAMS
from matchcast.schemas import FINAL_STATES, TaskStatus
from matchcast.tasks.batches import task_rows
from matchcast.tasks.records import TaskRecords

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
KEEPALIVE = b": keep-alive\n\n"
# Redis reads the event streams of one API process make at once. A change wakes every stream watching it, and
# each reads once: without a bound, a few hundred streams woken together would take every connection of the
# process's Redis pool (100, redis-py's default) and fail with 503 mid-stream, requests of other routes with them.
STREAM_READS = 32


class Watch:
    """One open stream's interest in some ids: woken (``wait``) when any of them changes; ``reads`` bounds the
    Redis reads of all the process's streams at once (``STREAM_READS``)."""

    def __init__(self, reads: asyncio.Semaphore) -> None:
        self.woken = asyncio.Event()
        self.reads = reads

    async def wait(self, timeout: float) -> bool:
        """True when woken within ``timeout`` seconds (and ready to be woken again), else False."""
        try:
            await asyncio.wait_for(self.woken.wait(), timeout)
        except TimeoutError:
            return False
        self.woken.clear()
        return True


class EventHub:
    """The open event streams of one API process: who watches which id, and how many each key holds."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.watches: dict[str, set[Watch]] = {}
        self.open: Counter[str] = Counter()
        self.reads = asyncio.Semaphore(STREAM_READS)

    def watched(self) -> bool:
        """Whether any stream is open (the listener decodes notices only then)."""
        return bool(self.watches)

    def changed(self, ids: list[str]) -> None:
        """Wake the streams watching any of ``ids``."""
        for ident in ids:
            for watch in self.watches.get(ident, ()):
                watch.woken.set()

    def reconnected(self) -> None:
        """The listener (re)subscribed: notices may have been missed, so every stream looks again."""
        for watches in self.watches.values():
            for watch in watches:
                watch.woken.set()

    @contextlib.contextmanager
    def watch(self, owner: str, kind: str, ident: str) -> Iterator[Watch]:
        """Hold a stream for ``owner`` (an API key, or a client address) watching ``ident``; 429 past the cap."""
        if self.open[owner] >= self.per_key:
            SSE_REFUSED.inc()
            raise TooManyStreams(f"{self.per_key} event streams are open for this key on this API process")
        watch = Watch(self.reads)
        self.open[owner] += 1
        self.watches.setdefault(ident, set()).add(watch)
        SSE_STREAMS.labels(kind=kind).inc()
        try:
            yield watch
        finally:
            SSE_STREAMS.labels(kind=kind).dec()
            self.open[owner] -= 1
            if not self.open[owner]:
                del self.open[owner]
            watches = self.watches.get(ident, set())
            watches.discard(watch)
            if not watches:
                self.watches.pop(ident, None)


def sse(event: str, data: Any, ident: str | None = None) -> bytes:
    """One server-sent event: its id (for ``Last-Event-ID``), its name and one line of JSON."""
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


async def task_events(
    records: TaskRecords, watch: Watch, first: TaskStatus, last_seen: str | None, keepalive_s: float
) -> AsyncIterator[bytes]:
    """A task's states from ``first`` (read after ``watch`` was registered) until a final one."""
    status = first
    while True:
        if status.status != last_seen:
            SSE_EVENTS.labels(kind="task").inc()
            yield sse("status", status.model_dump(mode="json"), status.status)
            last_seen = status.status
        if status.status in FINAL_STATES:
            yield sse("end", {"task_id": status.task_id, "status": status.status})
            return
        if not await watch.wait(keepalive_s):
            yield KEEPALIVE
            continue
        async with watch.reads:
            status = await records.status(status.task_id)


def _progress(batch_id: str, states: dict[str, str], changes: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    counts = Counter(states.values())
    done = sum(n for state, n in counts.items() if state in FINAL_STATES)
    return {
        "batch_id": batch_id,
        "kind": kind,
        "count": len(states),
        "counts": dict(counts),
        "done": done,
        "done_fraction": round(done / len(states), 4) if states else 1.0,
        "tasks": changes,
    }


def batch_states(record: dict[str, Any], metas: list[dict[str, Any] | None]) -> tuple[dict[str, str], dict[str, int]]:
    """Each task's state and match, in submission order."""
    rows = task_rows(record, metas)
    return {s.task_id: s.status for _, s in rows}, {s.task_id: m for m, s in rows}


async def batch_events(
    records: TaskRecords,
    watch: Watch,
    batch_id: str,
    snapshot: tuple[str, dict[str, str], dict[str, int]],
    last_seen: str | None,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    """A batch's progress: a snapshot (or, resuming, what was missed), then every change until all are final."""
    cursor, states, matches = snapshot

    def change(task_id: str, state: str) -> dict[str, Any]:
        return {"task_id": task_id, "match_id": matches.get(task_id), "status": state}

    if last_seen is not None and STREAM_ID.match(last_seen):  # resuming: what changed since, in one event
        async with watch.reads:
            missed = await records.batch_events(batch_id, last_seen)
        seen = {t for _, _, changes in missed for t, _ in changes if t in states}
        payload = [change(t, states[t]) for t in states if t in seen]
        data = _progress(batch_id, states, payload, "resumed")
    else:
        data = _progress(batch_id, states, [change(t, s) for t, s in states.items() if s != "PENDING"], "snapshot")
    SSE_EVENTS.labels(kind="batch").inc()
    yield sse("progress", data, cursor)
    while data["done"] < data["count"]:
        if not await watch.wait(keepalive_s):
            yield KEEPALIVE
            continue
        async with watch.reads:
            entries = await records.batch_events(batch_id, cursor)
        for ident, kind, changes in entries:
            cursor = ident
            known = [(t, s) for t, s in changes if t in states]
            for task_id, state in known:
                states[task_id] = state
            data = _progress(batch_id, states, [change(t, s) for t, s in known], kind)
            SSE_EVENTS.labels(kind="batch").inc()
            yield sse("progress", data, cursor)
    yield sse("end", {"batch_id": batch_id, "counts": data["counts"]})
