"""PredictionService: one loaded model and the match store, predicting by match id or inline features."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from matchcast.data.store import MatchStore, MatchWithFeatures
from matchcast.errors import FeaturesNotReady, InvalidInput, MatchcastError, MatchNotFound
from matchcast.model.goals import markets_json
from matchcast.model.registry import LoadedModel, ModelRegistry
from matchcast.schemas import (
    FEATURE_NAMES,
    AsyncPredictionRequest,
    InlinePredictionRequest,
    MatchResult,
    Prediction,
    Probabilities,
)
from matchcast.service.prediction_log import LOGGED_FIELDS, ServedLog

log = logging.getLogger(__name__)


class PredictionService:
    """Loads the aliased model once; predicts from stored or inline features.

    With ``markets`` (the default) every prediction also carries expected goals and the goal markets of its
    scoreline grid (``model.goals``), and the grid itself when asked for."""

    def __init__(
        self,
        store: MatchStore,
        registry: ModelRegistry,
        alias: str,
        *,
        markets: bool = True,
        served_log: ServedLog | None = None,
    ) -> None:
        self.store, self.registry, self.alias, self.markets = store, registry, alias, markets
        self.served_log = served_log  # the prediction log (and the shadow); None: nothing recorded
        self.model: LoadedModel = self._load()
        self._checked_at = time.monotonic()

    def _load(self) -> LoadedModel:
        model = self.registry.load(self.alias)
        if model.predictor.feature_names != FEATURE_NAMES:
            raise InvalidInput(
                f"model version {model.version} expects features {model.predictor.feature_names}, "
                f"this code computes {FEATURE_NAMES}"
            )
        return model

    def refresh(self, every_s: float) -> LoadedModel | None:
        """If ``every_s`` has passed, ask the registry where the alias points; load a new version once.

        Returns the newly loaded model, or None. The old model keeps serving until the new one is ready,
        and a failed check or load keeps it serving too (the next check tries again).
        """
        now = time.monotonic()
        if now - self._checked_at < every_s:
            return None
        self._checked_at = now
        try:
            version = self.registry.version_of(self.alias)
            if version is None or version == self.model.version:
                return None
            model = self._load()
        except Exception as exc:
            log.warning("model refresh failed, keeping version %s: %s", self.model.version, exc)
            return None
        log.info("model_switched from=%s to=%s alias=%s", self.model.version, model.version, self.alias)
        self.model = model
        return model

    def _forecast(self, x: np.ndarray, grids: list[bool] | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Rows of 1X2 probabilities and, per row, expected goals and markets (empty when markets are off)."""
        predictor = self.model.predictor
        if not self.markets:
            probs = predictor.predict_proba(x)
            return probs, [{} for _ in range(len(probs))]
        probs, grid = predictor.predict_grid(x)
        return probs, markets_json(grid, with_grid=grids)

    def _prediction(self, probs: np.ndarray, extra: dict[str, Any] | None = None, **labels: Any) -> Prediction:
        p = [float(v) for v in probs]
        total = sum(p)
        return Prediction(
            probabilities=Probabilities(home=p[0] / total, draw=p[1] / total, away=1.0 - (p[0] + p[1]) / total),
            model_name=self.model.name,
            model_version=self.model.version,
            predicted_at=datetime.now(UTC),
            **labels,
            **(extra or {}),
        )

    def _prediction_json(self, probs: np.ndarray, extra: dict[str, Any], **labels: Any) -> dict[str, Any]:
        """``_prediction`` as JSON, ``extra`` (markets built by ``markets_json``, JSON-ready) added unvalidated:
        the hot paths skip pydantic's validation of thirty small objects (the API validates what it serves)."""
        return self._prediction(probs, **labels).model_dump(mode="json") | extra

    def predict_match(self, match_id: int, *, grid: bool = False, source: str = "sync") -> Prediction:
        """Predict a stored match from its precomputed features (``grid``: with the whole scoreline grid)."""
        found = self.store.get_with_features(match_id)
        if found is None:
            if self.store.get(match_id) is None:
                raise MatchNotFound(match_id)
            raise FeaturesNotReady(f"match {match_id} has no features yet; run `matchcast ingest`")
        x = np.atleast_2d(np.asarray(found.values, dtype=np.float64))
        probs, extra = self._forecast(x, [grid])
        pred = self._prediction(probs[0], extra[0], **_stored_labels(found))
        if self.served_log is not None:
            self.served_log.served([pred.model_dump(include=LOGGED_FIELDS)], x, source)
        return pred

    def predict_many(
        self, match_ids: list[int], grids: frozenset[int] = frozenset(), *, source: str = "async"
    ) -> dict[int, dict[str, Any] | MatchcastError]:
        """Predict stored matches in one vectorised pass: {match_id: prediction JSON, or the error for it}.

        The matches in ``grids`` get their whole scoreline grid too; ``source`` names them in the prediction log."""
        found = self.store.features_for(match_ids)
        out: dict[int, dict[str, Any] | MatchcastError] = {}
        ids = [i for i in match_ids if i in found]
        if ids:
            x = np.array([found[i].values for i in ids], dtype=np.float64)
            probs, extras = self._forecast(x, [i in grids for i in ids])
            for i, p, extra in zip(ids, probs, extras, strict=True):
                out[i] = self._prediction_json(p, extra, **_stored_labels(found[i]))
            if self.served_log is not None:
                self.served_log.served([out[i] for i in ids], x, source)  # type: ignore[misc]
        missing = [i for i in match_ids if i not in found]
        if missing:
            stored = self.store.existing(missing)
            for i in missing:
                out[i] = (
                    FeaturesNotReady(f"match {i} has no features yet; run `matchcast ingest`")
                    if i in stored
                    else MatchNotFound(i)
                )
        return out

    def predict_inline(self, request: InlinePredictionRequest) -> Prediction:
        """Predict from features given in the request."""
        x = np.array([[getattr(request.features, n) for n in FEATURE_NAMES]], dtype=np.float64)
        probs, extra = self._forecast(x, [request.grid])
        return self._prediction(
            probs[0], extra[0], home_team=request.home_team, away_team=request.away_team, date=request.date
        )

    def predict_each(self, payloads: list[Any], *, source: str = "sync") -> list[dict[str, Any]]:
        """Many requests in one vectorised pass, each answered on its own.

        For each payload, in order: ``{"prediction": {...}}`` or ``{"error": <exception type>, "detail": <text>}``:
        one bad or unknown request does not fail the others.
        """
        out: list[dict[str, Any]] = [{} for _ in payloads]
        by_id: dict[int, list[int]] = {}
        with_grid: set[int] = set()
        inline: list[tuple[int, InlinePredictionRequest]] = []
        for i, payload in enumerate(payloads):
            try:
                if not isinstance(payload, dict):
                    raise InvalidInput("payload must be a JSON object")
                if "match_id" in payload:
                    stored = AsyncPredictionRequest.model_validate(payload)
                    by_id.setdefault(stored.match_id, []).append(i)
                    if stored.grid:
                        with_grid.add(stored.match_id)
                else:
                    inline.append((i, InlinePredictionRequest.model_validate(payload)))
            except ValidationError as exc:
                out[i] = _error_entry(InvalidInput(f"invalid task payload: {_problems(exc)}"))
            except InvalidInput as exc:
                out[i] = _error_entry(exc)
        if by_id:
            for match_id, found in self.predict_many(list(by_id), frozenset(with_grid), source=source).items():
                entry = _error_entry(found) if isinstance(found, Exception) else {"prediction": found}
                for i in by_id[match_id]:
                    out[i] = entry
        if inline:
            x = np.array([[getattr(r.features, n) for n in FEATURE_NAMES] for _, r in inline], dtype=np.float64)
            probs, extras = self._forecast(x, [r.grid for _, r in inline])
            for (i, r), p, extra in zip(inline, probs, extras, strict=True):
                pred = self._prediction_json(p, extra, home_team=r.home_team, away_team=r.away_team, date=r.date)
                out[i] = {"prediction": pred}
        return out

    def predict(self, payload: dict[str, Any], *, source: str = "async") -> dict[str, Any]:
        """The task's entry point: a JSON payload in, a JSON prediction out.

        Validated with the API's own request schemas (bounds, strict numbers, unknown keys refused), so a
        worker runs exactly what the API would have accepted, whoever put the message on the queue."""
        if not isinstance(payload, dict):
            raise InvalidInput("payload must be a JSON object")
        try:
            if "match_id" in payload:
                by_id = AsyncPredictionRequest.model_validate(payload)
                pred = self.predict_match(by_id.match_id, grid=by_id.grid, source=source)
            else:
                pred = self.predict_inline(InlinePredictionRequest.model_validate(payload))
        except ValidationError as exc:
            raise InvalidInput(f"invalid task payload: {_problems(exc)}") from None
        return pred.model_dump(mode="json")


def _stored_labels(found: MatchWithFeatures) -> dict[str, Any]:
    """What a prediction of a stored match says about the match and the features it was made from."""
    m = found.match
    played = None
    if m.home_goals is not None and m.away_goals is not None and m.result is not None:
        score = {"home_goals": m.home_goals, "away_goals": m.away_goals, "result": m.result}
        played = MatchResult.model_validate(score)
    return {
        "match_id": m.match_id,
        "league": m.league,
        "home_team": m.home_team,
        "away_team": m.away_team,
        "date": m.date,
        "feature_version": found.feature_version,
        "feature_revision": found.revision,
        "features_as_of": found.as_of,
        "result": played,
    }


def _error_entry(exc: Exception) -> dict[str, Any]:
    return {"error": type(exc).__name__, "detail": str(exc)}


def _problems(exc: ValidationError, limit: int = 5) -> str:
    """Where and what, without echoing the (possibly huge or hostile) input values."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in e['loc'])[:80]}: {e['msg'][:120]}" for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
