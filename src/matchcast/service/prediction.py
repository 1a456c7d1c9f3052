"""PredictionService: one loaded model and the match store, predicting by match id or inline features."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from matchcast.data.store import MatchStore
from matchcast.errors import FeaturesNotReady, InvalidInput, MatchNotFound
from matchcast.model.registry import LoadedModel, ModelRegistry
from matchcast.schemas import FEATURE_NAMES, InlinePredictionRequest, Prediction, Probabilities

log = logging.getLogger(__name__)


class PredictionService:
    """Loads the aliased model once; predicts from stored or inline features."""

    def __init__(self, store: MatchStore, registry: ModelRegistry, alias: str) -> None:
        self.store, self.registry, self.alias = store, registry, alias
        self.model: LoadedModel = registry.load(alias)
        if self.model.predictor.feature_names != FEATURE_NAMES:
            raise InvalidInput(
                f"model version {self.model.version} expects features {self.model.predictor.feature_names}, "
                f"this code computes {FEATURE_NAMES}"
            )

    def _prediction(self, probs: np.ndarray, **labels: Any) -> Prediction:
        p = [float(v) for v in probs]
        total = sum(p)
        return Prediction(
            probabilities=Probabilities(home=p[0] / total, draw=p[1] / total, away=1.0 - (p[0] + p[1]) / total),
            model_name=self.model.name,
            model_version=self.model.version,
            predicted_at=datetime.now(UTC),
            **labels,
        )

    def predict_match(self, match_id: int) -> Prediction:
        """Predict a stored match from its precomputed features."""
        found = self.store.get_with_features(match_id)
        if found is None:
            if self.store.get(match_id) is None:
                raise MatchNotFound(match_id)
            raise FeaturesNotReady(f"match {match_id} has no features yet; run `matchcast ingest`")
        m, feature_version, values = found
        probs = self.model.predictor.predict_proba(np.asarray(values))[0]
        return self._prediction(
            probs,
            match_id=m.match_id,
            league=m.league,
            home_team=m.home_team,
            away_team=m.away_team,
            date=m.date,
            feature_version=feature_version,
        )

    def predict_inline(self, request: InlinePredictionRequest) -> Prediction:
        """Predict from features given in the request."""
        x = np.array([getattr(request.features, n) for n in FEATURE_NAMES], dtype=np.float64)
        probs = self.model.predictor.predict_proba(x)[0]
        return self._prediction(probs, home_team=request.home_team, away_team=request.away_team, date=request.date)

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The task's entry point: a JSON payload in, a JSON prediction out."""
        if set(payload) == {"match_id"}:
            match_id = payload["match_id"]
            if not isinstance(match_id, int) or isinstance(match_id, bool) or match_id < 1:
                raise InvalidInput("match_id must be a positive integer")
            pred = self.predict_match(match_id)
        else:
            try:
                request = InlinePredictionRequest.model_validate(payload)
            except ValidationError as exc:
                raise InvalidInput(f"invalid inline request: {exc.errors(include_url=False)}") from None
            pred = self.predict_inline(request)
        return pred.model_dump(mode="json")
