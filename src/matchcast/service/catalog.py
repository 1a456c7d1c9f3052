"""The serving model's registry metadata, cached briefly so the API does not ask MLflow on every call."""

from __future__ import annotations

import json
import threading
import time

from matchcast.model.registry import ModelRegistry
from matchcast.schemas import ModelInfo


class ModelCatalog:
    """Answers "which model serves?" from the registry, at most once per ``ttl_s``."""

    def __init__(self, registry: ModelRegistry, alias: str, ttl_s: float = 10.0) -> None:
        self.registry, self.alias, self.ttl_s = registry, alias, ttl_s
        self._cached: tuple[float, ModelInfo] | None = None
        self._lock = threading.Lock()

    def fresh(self) -> ModelInfo | None:
        """The cached metadata while it is fresh, else None (then call ``info``, which may ask the registry)."""
        cached = self._cached
        if cached and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        return None

    def info(self) -> ModelInfo:
        """Metadata of the version the alias points at (``ModelNotFound`` if none)."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl_s:
                return self._cached[1]
        v = self.registry.info(self.alias)
        window = {
            k.removeprefix("training_window_"): v.tags[k]
            for k in ("training_window_start", "training_window_end")
            if k in v.tags
        }
        if "held_out_season" in v.tags:
            window["held_out_season"] = v.tags["held_out_season"]
        info = ModelInfo(
            name=v.name,
            version=v.version,
            alias=v.alias,
            run_id=v.run_id,
            created_at=v.created_at,
            training_window=window,
            feature_names=json.loads(v.tags.get("feature_names", "[]")),
            feature_version=v.tags.get("feature_version"),
            metrics=v.metrics,
        )
        with self._lock:
            self._cached = (time.monotonic(), info)
        return info
