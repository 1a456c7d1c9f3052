"""Scheduled retraining with a gate: train a challenger on every result, compare it with the champion, decide.

``retrain`` (the ``retrain_model`` task and ``matchcast retrain`` both call it):

1. builds the dataset once (``training.build_dataset``: every finished match, from ``MATCHCAST_RETRAIN_FROM``
   when set, with the feature rows the store serves, which every ingest refreshes with ``compute_features``;
   computed afresh only when rows of this feature version are missing) and trains on it with
   ``training.train``, which registers a new version and points the alias ``challenger`` at it;
2. compares challenger and champion with ``model.gate.compare``: a walk-forward over the last
   ``MATCHCAST_RETRAIN_WEEKS`` weeks with results, each week forecast by each model's recipe refitted on the
   matches before it; the champion's recipe is its own ``C`` and lacks the days of results it was trained
   without (challenger's training window end minus the champion's), as serving it would;
3. decides by ``model.gate.decide`` (promote when mean paired RPS difference + 1 SE < 0 on >= 100 matches);
4. records the decision and both scores on the challenger's MLflow run (metrics ``gate_*``, tags, the document
   ``gate/decision.json``) and on its model version (tags), and logs one line ``retrain_decision``;
5. on promotion moves the serving alias (``lifecycle.serve``: workers switch at their next refresh) and clears
   ``challenger``; on rejection ``challenger`` stays on the new version, for the shadow to watch, until the next
   retrain replaces it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from matchcast.config import CHALLENGER_ALIAS, Settings
from matchcast.data.features import FEATURE_VERSION
from matchcast.errors import Conflict, InvalidInput
from matchcast.model.gate import Comparison, GateRule, Recipe, compare, decide
from matchcast.model.predictor import DEFAULT_C
from matchcast.model.registry import ModelRegistry, VersionInfo
from matchcast.schemas import FEATURE_NAMES
from matchcast.service.lifecycle import serve
from matchcast.service.training import TrainResult, build_dataset, train
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger(__name__)
RULE = GateRule()
DECISION_FILE = "gate/decision.json"
RETRAIN_LEASE = "retrain"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain did: the decision record (JSON-ready, also the task's result) and its comparison."""

    record: dict[str, Any]
    comparison: Comparison | None

    @property
    def promoted(self) -> bool:
        """Whether the challenger now serves."""
        return bool(self.record["decision"] == "promoted")


def rule_text(rule: GateRule = RULE) -> str:
    """The rule in words, as recorded with each decision."""
    return (
        f"promote when the mean paired RPS difference (challenger - champion) + {rule.margin_se:g} SE < 0 "
        f"on >= {rule.min_matches} matches"
    )


def _window_end(info: VersionInfo) -> date | None:
    text = info.tags.get("training_window_end") or info.params.get("training_window_end")
    return date.fromisoformat(text) if text else None


def _recipe(info: VersionInfo, lag_days: int = 0) -> Recipe:
    return Recipe(c=float(info.params.get("C", DEFAULT_C)), lag_days=max(0, lag_days))


def _unservable(champion: VersionInfo) -> bool:
    """The champion expects features this code does not compute (a worker would refuse to load it)."""
    return tuple(json.loads(champion.tags.get("feature_names", "[]"))) != FEATURE_NAMES


def retrain(
    settings: Settings,
    *,
    since: date | None = None,
    weeks: int | None = None,
    progress: Progress | None = None,
) -> RetrainOutcome:
    """Retrain, compare with the champion, promote or not, record (see the module docstring).

    ``since`` (default ``MATCHCAST_RETRAIN_FROM``) bounds the matches fitted on; ``weeks`` (default
    ``MATCHCAST_RETRAIN_WEEKS``) the gate's window. One retrain runs at a time on all hosts: a second one, from
    beat or ``matchcast retrain``, raises ``Conflict`` while the first holds the store's lease ``retrain``
    (taken for ``MATCHCAST_RETRAIN_TIME_LIMIT_S``, released at the end). The fits use one BLAS thread: beside
    busy workers, BLAS threads spinning for a core made a fit of 57k matches 5x slower (21 s against 4 s on 2
    loaded cores)."""
    store = store_for(settings)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    held = store.take_lease(RETRAIN_LEASE, holder, settings.retrain_time_limit_s)
    if held is not None:
        raise Conflict(
            f"a retrain is running already ({held.holder}, since {held.acquired_at:%Y-%m-%d %H:%M:%S} UTC; "
            f"its lease lapses at {held.expires_at:%H:%M:%S} UTC at the latest)"
        )
    try:
        with threadpool_limits(limits=1):
            return _retrain(settings, since, weeks, progress)
    finally:
        store.release_lease(RETRAIN_LEASE, holder)


def _retrain(settings: Settings, since: date | None, weeks: int | None, progress: Progress | None) -> RetrainOutcome:
    started = time.perf_counter()
    since = since if since is not None else settings.retrain_from
    weeks = weeks or settings.retrain_weeks
    store, registry = store_for(settings), registry_for(settings)
    alias = settings.model_alias
    if progress:
        progress("building the dataset", 0, 1)
    stored = {mid: values for mid, version, values in store.feature_table() if version == FEATURE_VERSION}
    ds = build_dataset(store, since=since, stored=stored)
    seconds = {"dataset": time.perf_counter() - started}
    current = registry.version_of(alias)
    champion = registry.info(version=current) if current else None
    t = time.perf_counter()
    trained = train(store, registry, alias=CHALLENGER_ALIAS, progress=progress, dataset=ds)
    seconds["train"] = time.perf_counter() - t
    challenger = registry.info(version=trained.version)
    comparison: Comparison | None = None
    t = time.perf_counter()
    if champion is None:
        promote, reason = True, f"no version had the alias {alias!r}"
    elif _unservable(champion):
        promote, reason = True, f"{alias} version {champion.version} expects features this code does not compute"
    else:
        if progress:
            progress(f"comparing with {alias} on {weeks} weeks", 0, 1)
        new_end, old_end = _window_end(challenger), _window_end(champion)
        lag = (new_end - old_end).days if new_end and old_end else 0
        dates = np.array([d.toordinal() for d in ds.dates], dtype=np.int64)
        try:
            comparison = compare(ds.x, ds.y, dates, _recipe(challenger), _recipe(champion, lag), weeks)
        except InvalidInput as exc:  # e.g. too few matches before the window: recorded, not promoted
            promote, reason = False, f"cannot compare: {exc.detail}"
        else:
            promote, reason = decide(comparison, RULE)
    seconds["gate"] = time.perf_counter() - t
    if promote:
        serve(registry, alias, trained.version, current, {"promoted_by": "retrain gate"})
    seconds["total"] = time.perf_counter() - started
    record = _record(settings, registry, trained.version, champion, comparison, promote, reason, trained, seconds)
    _log_to_mlflow(registry, challenger, record, comparison)
    log.info(
        "retrain_decision decision=%s challenger=%s champion=%s serving=%s diff=%s se=%s n=%s seconds=%.1f reason=%s",
        record["decision"],
        trained.version,
        record["champion_version"],
        record["serving_version"],
        _fmt(record["rps_diff"], "+.5f"),
        _fmt(record["rps_diff_se"], ".5f"),
        record["window"]["n"],
        seconds["total"],
        reason,
    )
    if progress:
        progress("done", 1, 1)
    return RetrainOutcome(record, comparison)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _record(
    settings: Settings,
    registry: ModelRegistry,
    version: str,
    champion: VersionInfo | None,
    comparison: Comparison | None,
    promote: bool,
    reason: str,
    trained: TrainResult,
    seconds: dict[str, float],
) -> dict[str, Any]:
    c = comparison
    return {
        "decision": "promoted" if promote else "rejected",
        "reason": reason,
        "rule": rule_text(),
        "model_name": settings.model_name,
        "alias": settings.model_alias,
        "challenger_version": version,
        "champion_version": champion.version if champion else None,
        "serving_version": registry.version_of(settings.model_alias),
        "challenger_alias_version": registry.version_of(CHALLENGER_ALIAS),
        "challenger_rps": c.challenger_rps if c else None,
        "champion_rps": c.champion_rps if c else None,
        "rps_diff": c.diff_mean if c else None,
        "rps_diff_se": c.diff_se if c else None,
        "window": {
            "weeks": [[a.isoformat(), b.isoformat()] for a, b in c.weeks] if c else [],
            "n": c.n if c else 0,
            "refits": c.fits if c else 0,
        },
        "training": {
            "n_train": trained.n_train,
            "window_start": trained.window[0].isoformat(),
            "window_end": trained.window[1].isoformat(),
            "held_out_season": trained.held_out_season,
            "heldout_rps": trained.metrics.get("heldout_rps"),
        },
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "decided_at": datetime.now(UTC).isoformat(),
    }


def _log_to_mlflow(
    registry: ModelRegistry, challenger: VersionInfo, record: dict[str, Any], comparison: Comparison | None
) -> None:
    """The decision on the challenger's run (metrics, tags, the record) and on its model version (tags)."""
    metrics = {
        "gate_promoted": 1.0 if record["decision"] == "promoted" else 0.0,
        "retrain_seconds": float(record["seconds"]["total"]),
    }
    if comparison is not None:
        metrics |= {
            "gate_challenger_rps": comparison.challenger_rps,
            "gate_champion_rps": comparison.champion_rps,
            "gate_rps_diff": comparison.diff_mean,
            "gate_rps_diff_se": comparison.diff_se,
            "gate_n": float(comparison.n),
        }
    tags = {
        "gate_decision": str(record["decision"]),
        "gate_reason": str(record["reason"])[:500],
        "gate_champion_version": str(record["champion_version"]),
        "gate_rule": str(record["rule"]),
    }
    if challenger.run_id:
        registry.annotate_run(challenger.run_id, metrics=metrics, tags=tags, documents={DECISION_FILE: record})
    registry.tag_version(challenger.version, tags)
