"""The ceiling: the same champion model called in-process behind a FastAPI app, no queue, no result backend.

``PredictionService`` is built once when the app is created (like a worker process does) and called directly
on the event loop (a feature lookup in the match store plus a 16-feature softmax: well under a millisecond), so
this is the most a single uvicorn process on this machine can serve. No API keys, no metrics.

Served by ``bench_serving.py`` as ``uvicorn ceiling_app:create_app --factory --app-dir benchmarks``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from matchcast.config import Settings
from matchcast.errors import MatchcastError
from matchcast.service.prediction import PredictionService
from matchcast.service.wiring import registry_for, store_for


def create_app() -> FastAPI:
    """The ceiling app for the settings in the environment."""
    settings = Settings()
    service = PredictionService(
        store_for(settings), registry_for(settings), settings.model_alias, markets=settings.markets
    )
    app = FastAPI(title="matchcast ceiling (in-process model)")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/predict/{match_id}", response_model=None)
    async def predict(match_id: int) -> Any:
        try:
            return service.predict({"match_id": match_id})
        except MatchcastError as exc:
            return JSONResponse({"type": type(exc).__name__, "detail": str(exc)}, status_code=404)

    return app
