"""The FastAPI application: ``create_app(settings)``; routes read like a table of contents."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from matchcast import __version__
from matchcast.api import errors
from matchcast.api.deps import Parts
from matchcast.api.dispatch import Dispatcher
from matchcast.api.middleware import BodyLimit, RequestMetrics
from matchcast.api.routes import monitoring, predict
from matchcast.config import Settings, get_settings
from matchcast.service.catalog import ModelCatalog
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger("matchcast.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = Dispatcher(settings)
        await dispatcher.start()
        app.state.parts = Parts(
            settings=settings,
            store=store_for(settings),
            dispatcher=dispatcher,
            catalog=ModelCatalog(registry_for(settings), settings.model_alias),
        )
        log.info("api_started broker=%s", (settings.embedded and "embedded") or "configured")
        try:
            yield
        finally:
            await dispatcher.close()

    app = FastAPI(
        title="matchcast",
        version=__version__,
        lifespan=lifespan,
        description="Football match outcome probabilities, synchronous and asynchronous.",
    )
    errors.install(app)
    app.include_router(predict.router)
    app.include_router(monitoring.router)
    app.add_middleware(RequestMetrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
