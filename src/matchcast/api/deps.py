"""The one place the API's parts are wired together; routes ask for them by type.

The dependencies are ``async def``: FastAPI would run a plain ``def`` one in its thread pool, a thread hop
per dependency per request for what is an attribute read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from matchcast.api.dispatch import Dispatcher
from matchcast.config import Settings
from matchcast.data.store import MatchStore
from matchcast.service.auth import ApiKeyService
from matchcast.service.catalog import ModelCatalog
from matchcast.service.match_index import KnownMatches
from matchcast.service.ratelimit import TokenBuckets


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

    def known_matches(self) -> KnownMatches:
        """The stored match ids, built on first use."""
        if self.matches is None:
            self.matches = KnownMatches(self.store)
        return self.matches


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


async def _all_parts(request: Request) -> Parts:
    return _parts(request)


# The hot routes take everything as one dependency: FastAPI's cost grows with each dependency it resolves.
PartsDep = Annotated[Parts, Depends(_all_parts)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[MatchStore, Depends(_store)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
CatalogDep = Annotated[ModelCatalog, Depends(_catalog)]
MatchesDep = Annotated[KnownMatches, Depends(_matches)]
