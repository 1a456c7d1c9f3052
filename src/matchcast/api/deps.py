"""The one place the API's parts are wired together; routes ask for them by type.

The dependencies are ``async def``: FastAPI would run a plain ``def`` one in its thread pool, a thread hop
per dependency per request for what is an attribute read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from matchcast.api.dispatch import Dispatcher
from matchcast.config import Settings
from matchcast.data.store import MatchStore
from matchcast.schemas import ModelInfo
from matchcast.service.auth import ApiKeyService
from matchcast.service.catalog import ModelCatalog
from matchcast.service.live import LiveScoresService, live_service_for
from matchcast.service.match_index import FeatureRevisions, KnownMatches
from matchcast.service.ratelimit import TokenBuckets

V = TypeVar("V")


class SingleFlight:
    """Concurrent calls for one key share one run of a blocking function in the thread pool.

    When a cached answer (an API key's verdict, the serving model's metadata) expires under load, every request
    in flight misses it at once; without this, each would send the same lookup to the thread pool.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, fn: Callable[[], V]) -> V:
        """``fn()``'s result (or exception), shared with every caller of the same ``key`` meanwhile."""
        fut = self._running.get(key)
        if fut is None:
            fut = asyncio.ensure_future(run_in_threadpool(fn))
            self._running[key] = fut
            fut.add_done_callback(lambda _: self._running.pop(key, None))
        result: V = await asyncio.shield(fut)
        return result


@dataclass
class Parts:
    """What the API process holds for its lifetime."""

    settings: Settings
    store: MatchStore
    dispatcher: Dispatcher
    catalog: ModelCatalog
    keys: ApiKeyService | None = None  # API keys (api/auth.py); built from settings when left out
    limiter: TokenBuckets | None = None  # per-key rate limits
    matches: KnownMatches | None = None  # stored match ids, from memory
    revisions: FeatureRevisions | None = None  # stored matches' feature revisions, from memory
    flights: SingleFlight = field(default_factory=SingleFlight)  # shared lookups (api/auth.py, model info)
    live: LiveScoresService | None = None  # live scores (api/live.py), built on first use

    async def model_info(self) -> ModelInfo:
        """The serving model's metadata: cached, or asked of the registry once for all who wait."""
        cached = self.catalog.fresh()
        return cached if cached is not None else await self.flights.run("model-info", self.catalog.info)

    def known_matches(self) -> KnownMatches:
        """The stored match ids, built on first use."""
        if self.matches is None:
            self.matches = KnownMatches(self.store)
        return self.matches

    def feature_revisions(self) -> FeatureRevisions:
        """The stored matches' feature revisions, built on first use (kept current by ``api.revisions``)."""
        if self.revisions is None:
            self.revisions = FeatureRevisions(self.store)
        return self.revisions


async def _matches(request: Request) -> KnownMatches:
    return _parts(request).known_matches()


def _parts(request: Request) -> Parts:
    parts: Parts = request.app.state.parts
    return parts


async def _settings(request: Request) -> Settings:
    return _parts(request).settings


async def _store(request: Request) -> MatchStore:
    return _parts(request).store


async def _dispatcher(request: Request) -> Dispatcher:
    return _parts(request).dispatcher


async def _catalog(request: Request) -> ModelCatalog:
    return _parts(request).catalog


async def _live(request: Request) -> LiveScoresService:
    parts = _parts(request)
    if parts.live is None:
        parts.live = live_service_for(parts.settings)
    return parts.live


async def _all_parts(request: Request) -> Parts:
    return _parts(request)


# The hot routes take everything as one dependency: FastAPI's cost grows with each dependency it resolves.
PartsDep = Annotated[Parts, Depends(_all_parts)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[MatchStore, Depends(_store)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
CatalogDep = Annotated[ModelCatalog, Depends(_catalog)]
MatchesDep = Annotated[KnownMatches, Depends(_matches)]
LiveDep = Annotated[LiveScoresService, Depends(_live)]
