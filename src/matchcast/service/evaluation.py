"""Walk-forward evaluation from the match store: features, backtest, output files and an MLflow run."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from matchcast.config import Settings
from matchcast.data.features import FEATURE_VERSION, compute_features
from matchcast.errors import InvalidInput
from matchcast.model.evaluate import (
    ALL,
    METRICS,
    MODELS,
    EvalConfig,
    Evaluation,
    Period,
    parse_bound,
    walk_forward,
    write_outputs,
)
from matchcast.model.evaluate_goals import GOAL_METRICS, PAIRED_GOAL_METRICS
from matchcast.model.registry import code_version
from matchcast.schemas import FEATURE_NAMES
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger(__name__)
DEFAULT_FROM = "2020/21"
DEFAULT_TO = "2024/25"


@dataclass(frozen=True)
class EvaluationOutcome:
    """A finished evaluation: the results, where they were written, the MLflow run and how long it took."""

    evaluation: Evaluation
    out: Path
    files: dict[str, Path]
    run_id: str | None
    seconds: float


def default_out(settings: Settings) -> Path:
    """Where evaluation outputs go unless told otherwise."""
    return settings.home / "evaluation"


def _metrics(ev: Evaluation) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, row in ev.summary[ev.summary["season"] == ALL].iterrows():
        scope = "pooled" if row["league"] == ALL else str(row["league"])
        for model in MODELS:
            for metric in METRICS:
                out[f"{scope}_{model}_{metric}"] = float(row[f"{model}_{metric}"])
        out[f"{scope}_n"] = float(row["n"])
    for _, row in ev.goals[ev.goals["season"] == ALL].iterrows():
        scope = "pooled" if row["league"] == ALL else str(row["league"])
        for metric in GOAL_METRICS:
            for model in MODELS:
                out[f"{scope}_{model}_{metric}"] = float(row[f"{model}_{metric}"])
        for metric in PAIRED_GOAL_METRICS:
            out[f"{scope}_{metric}_diff_vs_dc"] = float(row[f"{metric}_diff_vs_dc"])
            out[f"{scope}_{metric}_diff_vs_dc_se"] = float(row[f"{metric}_diff_vs_dc_se"])
    for baseline, d in ev.paired.items():
        out[f"pooled_rps_diff_vs_{baseline}"] = d["mean"]
        out[f"pooled_rps_diff_vs_{baseline}_se"] = d["se"]
    return out


def run_evaluation(
    settings: Settings,
    *,
    out: Path | None = None,
    leagues: Sequence[str] = (),
    start: str | None = DEFAULT_FROM,
    end: str | None = DEFAULT_TO,
    config: EvalConfig | None = None,
    log_to_mlflow: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationOutcome:
    """Backtest the window (bounds are season labels like ``2020/21`` or dates), write the files, log a run."""
    t0 = time.perf_counter()
    period = Period(
        start=parse_bound(start) if start else None,
        end=parse_bound(end) if end else None,
        leagues=tuple(leagues),
    )
    config = config or EvalConfig()
    store = store_for(settings)
    known = store.leagues()
    unknown = sorted(set(period.leagues) - set(known))
    if unknown:
        raise InvalidInput(f"unknown league(s) {', '.join(unknown)}; the store has {', '.join(known) or 'none'}")
    if progress:
        progress("computing features", 0, 1)
    matches = store.all_matches()
    features = compute_features(matches)
    if progress:
        progress("computing features", 1, 1)
    evaluation = walk_forward(matches, features, period, config, progress)
    target = out or default_out(settings)
    files = write_outputs(evaluation, target)
    run_id = None
    if log_to_mlflow:
        if progress:
            progress("logging to MLflow", 0, 1)
        params: dict[str, object] = {
            "window_start": str(period.start),
            "window_end": str(period.end),
            "leagues": ",".join(period.leagues) or ALL,
            "feature_version": FEATURE_VERSION,
            "n_features": len(FEATURE_NAMES),
            **{f"config_{k}": v for k, v in asdict(config).items()},
            **{f"count_{k}": v for k, v in evaluation.counts.items()},
        }
        tags = {"kind": "walk_forward_evaluation", "code_version": code_version(), "output_dir": str(target)}
        run_id = registry_for(settings).log_evaluation(
            params=params, metrics=_metrics(evaluation), tags=tags, files=list(files.values())
        )
        if progress:
            progress("logging to MLflow", 1, 1)
    seconds = time.perf_counter() - t0
    log.info("evaluated %d matches in %.0f s: %s", evaluation.counts["matches"], seconds, json.dumps(evaluation.paired))
    return EvaluationOutcome(evaluation, target, files, run_id, seconds)
