"""The one place the API's parts are wired together; routes ask for them by type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from matchcast.api.dispatch import Dispatcher
from matchcast.config import Settings
from matchcast.data.store import MatchStore
from matchcast.service.catalog import ModelCatalog


@dataclass
class Parts:
    """What the API process holds for its lifetime."""

    settings: Settings
    store: MatchStore
    dispatcher: Dispatcher
    catalog: ModelCatalog


def _parts(request: Request) -> Parts:
    parts: Parts = request.app.state.parts
    return parts


def _settings(request: Request) -> Settings:
    return _parts(request).settings


def _store(request: Request) -> MatchStore:
    return _parts(request).store


def _dispatcher(request: Request) -> Dispatcher:
    return _parts(request).dispatcher


def _catalog(request: Request) -> ModelCatalog:
    return _parts(request).catalog


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[MatchStore, Depends(_store)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
CatalogDep = Annotated[ModelCatalog, Depends(_catalog)]
