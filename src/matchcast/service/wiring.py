"""Building the parts from settings, once per process."""

from __future__ import annotations

from functools import lru_cache

from matchcast.config import Settings
from matchcast.data.store import MatchStore
from matchcast.model.registry import ModelRegistry


@lru_cache(maxsize=4)
def store_for(settings: Settings) -> MatchStore:
    """The match store these settings name."""
    return MatchStore(settings.resolved_database_url())


@lru_cache(maxsize=4)
def registry_for(settings: Settings) -> ModelRegistry:
    """The model registry these settings name."""
    return ModelRegistry(
        settings.resolved_tracking_uri(),
        settings.resolved_registry_uri(),
        settings.model_name,
        settings.artifact_location(),
    )
