"""The design note's own synchronous design, kept as the benchmark's reference ("seed").

A FastAPI handler sends ``predict_match`` to the ``ml`` queue and blocks a thread of the event loop's default
executor on ``AsyncResult.get`` (``loop.run_in_executor``), exactly as ``docs/inference-modes.md`` describes it.
Same broker, result backend, worker and model as the real API (settings from ``MATCHCAST_*``); no API keys, no
match lookup, no metrics: only the mechanism being compared.

Served by ``bench_serving.py`` as ``uvicorn seed_app:create_app --factory --app-dir benchmarks``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from matchcast.config import Settings
from matchcast.tasks.celery_app import make_celery
from matchcast.tasks.names import ML_QUEUE, PREDICT_TASK

_SYNC_TIMEOUT = 30


def create_app() -> FastAPI:
    """The seed app for the settings in the environment."""
    settings = Settings()
    celery_app = make_celery(settings)
    app = FastAPI(title="matchcast seed (design note sync)")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/predict/{match_id}", response_model=None)
    async def predict(match_id: int) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                None,
                lambda: celery_app.send_task(PREDICT_TASK, args=[{"match_id": match_id}], queue=ML_QUEUE).get(
                    timeout=_SYNC_TIMEOUT
                ),
            )
        except CeleryTimeout:
            return JSONResponse({"type": "prediction_timeout", "detail": "no result in time"}, status_code=504)
        except Exception as exc:  # the task's own error, or the broker/backend's
            return JSONResponse({"type": "error", "detail": type(exc).__name__}, status_code=500)

    return app
