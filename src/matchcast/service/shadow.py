"""The shadow: the ``challenger`` model, loaded beside the champion while its alias exists.

Looked up by the prediction log's writer thread (``refresh``), never on the hot path; the hot path only reads
the loaded model and predicts the 1X2 of the rows the champion just predicted (``forecast``).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from matchcast.model.registry import LoadedModel, ModelRegistry
from matchcast.schemas import FEATURE_NAMES

log = logging.getLogger(__name__)


class Shadow:
    """The model an alias (``challenger``) points at, or None while it points nowhere."""

    def __init__(self, registry: ModelRegistry, alias: str, every_s: float) -> None:
        self.registry, self.alias, self.every_s = registry, alias, every_s
        self.model: LoadedModel | None = None
        self._checked_at = float("-inf")

    def refresh(self) -> None:
        """Every ``every_s``: follow the alias (load the version it points at, or drop the model once it is gone).

        A failed lookup or load keeps what was there (the next check tries again)."""
        now = time.monotonic()
        if now - self._checked_at < self.every_s:
            return
        self._checked_at = now
        try:
            version = self.registry.version_of(self.alias)
            if version is None:
                if self.model is not None:
                    log.info("shadow_stopped version=%s alias=%s", self.model.version, self.alias)
                self.model = None
                return
            if self.model is not None and self.model.version == version:
                return
            model = self.registry.load(self.alias)
        except Exception as exc:
            log.warning("shadow refresh failed (alias %s): %s", self.alias, exc)
            return
        if model.predictor.feature_names != FEATURE_NAMES:
            log.warning("shadow version %s expects other features; not shadowing it", model.version)
            return
        log.info("shadow_loaded version=%s alias=%s", model.version, self.alias)
        self.model = model

    def forecast(self, x: np.ndarray, serving_version: str) -> tuple[str, np.ndarray] | None:
        """(challenger version, its home/draw/away rows for ``x``), or None without a challenger other than the
        version that serves."""
        model = self.model
        if model is None or model.version == serving_version:
            return None
        return model.version, model.predictor.predict_proba(x)
