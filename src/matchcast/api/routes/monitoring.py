"""Task status, health, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from matchcast.api.deps import CatalogDep, DispatcherDep, SettingsDep, StoreDep
from matchcast.config import Settings, redact_text, secrets_of
from matchcast.data.dead_letters import DeadLetters
from matchcast.metrics import BROKER_NODE_UP, DEAD_LETTERS, QUEUE_DEPTH, READINESS, exposition
from matchcast.schemas import (
    AsyncSubmitted,
    DeadLetterOut,
    DeadLetterPage,
    ErrorBody,
    GoneBody,
    Readiness,
    TaskStatus,
)
from matchcast.service.feeds import feed_problems, load_feeds
from matchcast.tasks.cluster import NodeProbe, probe_nodes
from matchcast.tasks.heartbeat import live_workers
from matchcast.tasks.names import INTERACTIVE_QUEUE, MAINTENANCE_QUEUE, ML_QUEUE
from matchcast.tasks.replay import replayable_payload

router = APIRouter(tags=["monitoring"])
TaskId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


@router.get(
    "/monitoring/task_status/{task_id}",
    response_model=TaskStatus,
    responses={
        404: {"model": ErrorBody, "description": "No task with this id was issued (`task_not_found`)"},
        410: {"model": GoneBody, "description": "The task's record and result expired (`task_gone`, `expired_at`)"},
        503: {"model": ErrorBody},
    },
)
async def task_status(task_id: TaskId, dispatcher: DispatcherDep) -> TaskStatus:
    """What became of an issued task; 410 for one expired lately (``MATCHCAST_TASK_GONE_S``), 404 otherwise."""
    return await dispatcher.status(task_id)


@router.delete(
    "/monitoring/task_status/{task_id}",
    response_model=TaskStatus,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def cancel_task(task_id: TaskId, dispatcher: DispatcherDep) -> TaskStatus:
    """Cancel a queued task (it becomes ``REVOKED`` and never runs); a running or finished one gives 409."""
    return await dispatcher.cancel(task_id)


@router.get("/monitoring/dead_letters", response_model=DeadLetterPage)
async def dead_letters(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    include_replayed: bool = False,
) -> DeadLetterPage:
    """Tasks given up on, newest first: original arguments, reason, error, attempts."""
    total, rows = await run_in_threadpool(
        DeadLetters(store).list, limit=limit, offset=offset, include_replayed=include_replayed
    )
    if not include_replayed and offset == 0:
        DEAD_LETTERS.set(total)
    items = [DeadLetterOut.model_validate(r, from_attributes=True) for r in rows]
    return DeadLetterPage(total=total, limit=limit, offset=offset, items=items)


@router.post(
    "/monitoring/dead_letters/{dead_letter_id}/replay",
    response_model=AsyncSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def replay_dead_letter(
    dead_letter_id: Annotated[int, Path(ge=1, le=2**31 - 1)], store: StoreDep, dispatcher: DispatcherDep
) -> AsyncSubmitted:
    """Submit a dead letter's original arguments again as a new task."""
    letters = DeadLetters(store)
    payload = await run_in_threadpool(replayable_payload, letters, dead_letter_id)
    task_id = await dispatcher.submit(payload)
    await run_in_threadpool(letters.mark_replayed, dead_letter_id, task_id)
    return AsyncSubmitted(task_id=task_id, status_url=f"/monitoring/task_status/{task_id}")


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


SERVED = (INTERACTIVE_QUEUE, ML_QUEUE)  # sync and async work: each needs a worker


def _feed_notes(settings: Settings) -> tuple[bool, dict[str, str]]:
    """Whether feeds are configured, and what ``/ready`` notes as degraded about them (never unready)."""
    try:
        feeds = load_feeds(settings)
        if not feeds:
            return False, {}
        problems = feed_problems(settings, feeds)
    except Exception as exc:
        return True, {
            "feeds": f"cannot tell: {type(exc).__name__}: {redact_text(str(exc), secrets_of(settings))[:200]}"
        }
    return True, ({"feeds": "; ".join(f"{name}: {why}" for name, why in problems.items())} if problems else {})


def _consumers_from_heartbeats(workers: list[dict[str, object]], served: tuple[str, ...] = SERVED) -> dict[str, int]:
    counts = dict.fromkeys(served, 0)
    for w in workers:
        queues = w.get("queues")
        for q in served:
            if not isinstance(queues, list) or q in queues:
                counts[q] += 1
    return counts


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(settings: SettingsDep, dispatcher: DispatcherDep, catalog: CatalogDep) -> JSONResponse:
    """Broker, result backend, registry, workers consuming ``ml.interactive`` and ``ml``; 503 names what lacks."""
    timeout = settings.readiness_timeout_s
    checks: dict[str, str] = {}
    consumers: dict[str, int] | None = None

    try:  # the feed states are read from the match store: bounded like every other check
        has_feeds, notes = await asyncio.wait_for(run_in_threadpool(_feed_notes, settings), timeout)
    except TimeoutError:
        has_feeds, notes = True, {"feeds": f"cannot tell: the match store did not answer within {timeout} s"}

    nodes: list[NodeProbe] = []

    async def broker() -> None:
        nonlocal consumers, nodes
        nodes = await run_in_threadpool(probe_nodes, settings)
        for n in nodes:
            BROKER_NODE_UP.labels(node=n.label).set(n.error is None)
        answered = [n for n in nodes if n.error is None]
        if not answered:
            checks["broker"] = f"unavailable: {nodes[0].error}"
            return
        depth, consumers = answered[0].depth or 0, answered[0].consumers
        QUEUE_DEPTH.set(depth)
        of = f"; {len(answered)} of {len(nodes)} nodes reachable" if len(nodes) > 1 else ""
        checks["broker"] = f"ok ({depth} waiting in {ML_QUEUE}{of})"

    async def backend() -> None:
        await dispatcher.redis.ping()
        checks["result_backend"] = "ok"

    async def registry() -> None:
        info = await run_in_threadpool(catalog.info)
        checks["registry"] = f"ok ({info.name} version {info.version})"

    async def run(name: str, check: object) -> None:
        try:
            await asyncio.wait_for(check(), timeout)  # type: ignore[operator]
        except Exception as exc:
            # Exception texts may quote a URL: redacted (passwords, keys) before they are shown.
            checks[name] = f"unavailable: {type(exc).__name__}: {redact_text(str(exc), secrets_of(settings))[:200]}"

    await asyncio.gather(run("broker", broker), run("result_backend", backend), run("registry", registry))
    workers: list[dict[str, object]] = []
    if checks.get("result_backend") == "ok" and consumers is None:
        try:
            workers = await asyncio.wait_for(live_workers(dispatcher.redis), timeout)
        except Exception as exc:
            checks["worker"] = f"unavailable: {type(exc).__name__}"
    if "worker" not in checks:
        # RabbitMQ counts the consumers of each queue itself; other brokers rely on the workers' heartbeats.
        alive = consumers if consumers is not None else _consumers_from_heartbeats(workers)
        idle = [q for q in SERVED if not alive.get(q)]
        if idle:
            checks["worker"] = f"unavailable: no worker is consuming {', '.join(idle)}"
        else:
            checks["worker"] = "ok (" + ", ".join(f"{alive[q]} consuming {q}" for q in SERVED) + ")"
    missing = sorted(k for k, v in checks.items() if not v.startswith("ok"))
    for name in checks:
        READINESS.labels(check=name).set(0 if name in missing else 1)
    if has_feeds and (consumers is not None or checks.get("result_backend") == "ok"):
        serving = consumers if consumers is not None else _consumers_from_heartbeats(workers, (MAINTENANCE_QUEUE,))
        if not serving.get(MAINTENANCE_QUEUE):
            notes["maintenance"] = f"no worker is consuming {MAINTENANCE_QUEUE}: feeds and uploads wait"
    degraded = dispatcher.watch.degraded() | notes
    if len(nodes) > 1:  # a cluster serves while one node is lost: each unreachable node named, not a failure
        degraded.update({f"broker {n.label}": f"unreachable: {n.error}" for n in nodes if n.error is not None})
    body = Readiness(ready=not missing, checks=checks, missing=missing, degraded=degraded)
    return JSONResponse(body.model_dump(), status_code=503 if missing else 200)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    """Prometheus exposition of the API (all its processes when there are several)."""
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
