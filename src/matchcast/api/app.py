"""The FastAPI application: ``create_app(settings)``; routes read like a table of contents."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from matchcast import __version__
from matchcast.api import errors
from matchcast.api.auth import AUTH, AUTH_RESPONSES, document_auth, limiter_for
from matchcast.api.deps import Parts
from matchcast.api.dispatch import Dispatcher
from matchcast.api.fastpath import FastPaths
from matchcast.api.live import LiveGauges
from matchcast.api.middleware import BodyLimit, RequestMetrics
from matchcast.api.revisions import RevisionWatch
from matchcast.api.routes import admin, batches, events, live, monitoring, predict
from matchcast.config import Settings, configure_logging, get_settings, redact_url
from matchcast.service.auth import key_service_for
from matchcast.service.catalog import ModelCatalog
from matchcast.service.live import live_service_for
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger("matchcast.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # a process of `matchcast api --workers N`, or another ASGI server
        configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = Dispatcher(settings)
        await dispatcher.start()
        app.state.parts = Parts(
            settings=settings,
            store=store_for(settings),
            dispatcher=dispatcher,
            catalog=ModelCatalog(registry_for(settings), settings.model_alias, ttl_s=settings.model_refresh_s),
            keys=key_service_for(settings),
            limiter=limiter_for(settings),
        )
        # Warm what the first requests would otherwise wait for: the match id index, the model's metadata and the
        # feature revisions.
        parts = app.state.parts
        warm_revisions = parts.feature_revisions().refresh
        for warm in (lambda: parts.known_matches().contains(0), parts.catalog.info, warm_revisions):
            try:
                await run_in_threadpool(warm)
            except Exception as exc:  # the registry may come later; requests then ask again
                log.warning("could not warm up (%s)", type(exc).__name__)
        revision_watch = RevisionWatch(parts.feature_revisions(), settings.feature_revisions_refresh_s)
        await revision_watch.start()
        # Everything built so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise walk it again and again and stall every waiting request while they do.
        parts.live = live_service_for(settings)
        gauges = LiveGauges(parts.live, settings.live_refresh_s) if settings.live_refresh_s > 0 else None
        if gauges is not None:
            await gauges.start()
        gc.collect()
        gc.freeze()
        log.info("api_started broker=%s auth=%s", redact_url(settings.resolved_broker_url()), settings.auth)
        try:
            yield
        finally:
            await revision_watch.stop()
            if gauges is not None:
                await gauges.stop()
            await dispatcher.close()

    app = FastAPI(
        title="matchcast",
        version=__version__,
        lifespan=lifespan,
        description="Football match outcome probabilities, synchronous and asynchronous.",
    )
    errors.install(app)
    # Every router gets the API key check (api/auth.py: the role comes from the route; unknown routes need admin).
    app.include_router(predict.router, dependencies=[AUTH], responses=AUTH_RESPONSES)
    app.include_router(monitoring.router, dependencies=[AUTH], responses=AUTH_RESPONSES)
    app.include_router(batches.router, dependencies=[AUTH], responses=AUTH_RESPONSES)
    app.include_router(events.router, dependencies=[AUTH], responses=AUTH_RESPONSES)
    app.include_router(admin.router, dependencies=[AUTH], responses=AUTH_RESPONSES)
    app.include_router(live.router, dependencies=[AUTH], responses=AUTH_RESPONSES)
    document_auth(app, settings)
    # Outermost last: BodyLimit, then RequestMetrics, then the fast path, then FastAPI's routing.
    app.add_middleware(FastPaths, enabled=settings.api_fast_path)
    app.add_middleware(RequestMetrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, larger={"/admin/ingest": settings.feed_max_bytes})
    return app
