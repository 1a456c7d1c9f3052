"""Task status, health, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from matchcast.api.deps import CatalogDep, DispatcherDep, SettingsDep
from matchcast.config import ML_QUEUE, Settings
from matchcast.metrics import QUEUE_DEPTH
from matchcast.schemas import ErrorBody, Readiness, TaskStatus
from matchcast.service.tracking import live_workers

router = APIRouter(tags=["monitoring"])
TaskId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


@router.get(
    "/monitoring/task_status/{task_id}",
    response_model=TaskStatus,
    responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def task_status(task_id: TaskId, dispatcher: DispatcherDep) -> TaskStatus:
    """What became of an issued task; 404 for ids never issued or expired."""
    return await dispatcher.status(task_id)


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _broker_check(settings: Settings) -> tuple[int, int | None]:
    """Connect to the broker: (messages waiting in ``ml``, consumers when the broker can tell)."""
    with Connection(settings.resolved_broker_url(), connect_timeout=settings.readiness_timeout_s) as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.readiness_timeout_s)
        if conn.transport.driver_type == "amqp":
            _, depth, consumers = conn.default_channel.queue_declare(ML_QUEUE, passive=True)
            return int(depth), int(consumers)
        client = conn.default_channel.client
        return int(client.llen(ML_QUEUE)), None


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(settings: SettingsDep, dispatcher: DispatcherDep, catalog: CatalogDep) -> JSONResponse:
    """Broker, result backend, registry and at least one worker consuming ``ml``; 503 naming what is missing."""
    timeout = settings.readiness_timeout_s
    checks: dict[str, str] = {}
    consumers: int | None = None

    async def broker() -> None:
        nonlocal consumers
        depth, consumers = await run_in_threadpool(_broker_check, settings)
        QUEUE_DEPTH.set(depth)
        checks["broker"] = f"ok ({depth} waiting in {ML_QUEUE})"

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
            checks[name] = f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"

    await asyncio.gather(run("broker", broker), run("result_backend", backend), run("registry", registry))
    workers: list[dict[str, object]] = []
    if checks.get("result_backend") == "ok" and consumers is None:
        try:
            workers = await asyncio.wait_for(live_workers(dispatcher.redis), timeout)
        except Exception as exc:
            checks["worker"] = f"unavailable: {type(exc).__name__}"
    if "worker" not in checks:
        # RabbitMQ counts consumers of ``ml`` itself; other brokers rely on the workers' heartbeats.
        alive = consumers if consumers is not None else len(workers)
        if alive:
            checks["worker"] = f"ok ({alive} consuming {ML_QUEUE})"
        else:
            checks["worker"] = f"unavailable: no worker is consuming {ML_QUEUE}"
    missing = sorted(k for k, v in checks.items() if not v.startswith("ok"))
    body = Readiness(ready=not missing, checks=checks, missing=missing)
    return JSONResponse(body.model_dump(), status_code=503 if missing else 200)


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus exposition of this API process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
