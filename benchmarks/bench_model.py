"""Model timings (issue 3): training on every match, the full walk-forward evaluation, in-process prediction.

    .venv/bin/python benchmarks/bench_model.py [--home DIR] [--skip-eval]

Uses ``--home`` (a MATCHCAST_HOME whose store holds the data; default: a temp dir into which every bundled match
is ingested with all results) and prints:

- feature computation on every match (``compute_features``, the one code path of training, evaluation, serving);
- training on every finished match: features + fit (``make_pipeline``), and the whole ``matchcast train``
  (held-out scoring, refit, MLflow logging and registration into a temp registry);
- the full default ``matchcast evaluate`` (2020/21 to 2024/25, five leagues, MLflow logging included);
- in-process model time: one prediction, and a 380-match season as one batch (``Predictor.predict_proba``);
  with full markets: the season's score grids (``Predictor.predict_grid``) and every market as the API's JSON
  (``goals.markets_json``), the whole of the model's share of a prediction with markets on.

Timings on a shared machine are noisy: each is the best of a few runs where that is cheap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn: object, runs: int) -> float:
    """Fastest wall time of ``runs`` calls, seconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="MATCHCAST_HOME with the data (default: a fresh temp dir)")
    parser.add_argument("--skip-eval", action="store_true", help="skip the full walk-forward evaluation")
    args = parser.parse_args()

    from matchcast.config import Settings
    from matchcast.data.features import compute_features
    from matchcast.model.predictor import Predictor, make_pipeline
    from matchcast.schemas import FEATURE_NAMES
    from matchcast.service.bootstrap import ingest_files
    from matchcast.service.evaluation import run_evaluation
    from matchcast.service.training import build_dataset, train
    from matchcast.service.wiring import registry_for, store_for

    tmp = Path(tempfile.mkdtemp(prefix="bench-model-"))
    home = args.home or tmp / "home"
    settings = Settings(home=home)
    store = store_for(settings)
    if store.count() == 0:
        print(f"ingesting every bundled match into {home} ...", flush=True)
        ingest_files(settings, as_of=None)
    matches = store.all_matches()
    print(f"{len(matches)} matches, {len(FEATURE_NAMES)} features")

    results: dict[str, float] = {}
    t0 = time.perf_counter()
    compute_features(matches)
    results["features, all matches (s)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ds = build_dataset(store)
    results["dataset (store read + features) (s)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe = make_pipeline().fit(ds.x, ds.y)
    results[f"fit on {len(ds.y)} matches (s)"] = time.perf_counter() - t0
    results["training = dataset + fit (s)"] = (
        results["dataset (store read + features) (s)"] + results[f"fit on {len(ds.y)} matches (s)"]
    )

    # The same store; MLflow (tracking, registry, artifacts) in the temp dir, whatever --home holds.
    bench_settings = Settings(home=tmp, database_url=settings.resolved_database_url())
    t0 = time.perf_counter()
    train(store, registry_for(bench_settings), alias=None)
    results["matchcast train: held-out + refit + MLflow (s)"] = time.perf_counter() - t0

    if not args.skip_eval:
        t0 = time.perf_counter()
        out = run_evaluation(bench_settings, out=tmp / "evaluation")
        results["matchcast evaluate, default window (s)"] = time.perf_counter() - t0
        pooled = out.evaluation.pooled()
        print(
            f"evaluation: {int(pooled['n'])} matches, pooled RPS matchcast {pooled['matchcast_rps']:.4f}, "
            f"Dixon-Coles {pooled['dc_rps']:.4f}"
        )

    predictor = Predictor.from_pipeline(pipe, FEATURE_NAMES)
    one = ds.x[-1:]
    season = ds.x[-380:]
    n = 2000
    per_call = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            predictor.predict_proba(one)
        per_call.append((time.perf_counter() - t0) / n)
    results["single prediction, in-process (µs)"] = statistics.median(per_call) * 1e6
    results["380-match season, one batch (µs)"] = best_of(lambda: predictor.predict_proba(season), 50) * 1e6
    assert np.allclose(predictor.predict_proba(season).sum(axis=1), 1.0)

    from matchcast.model.goals import DEFAULT_GOALS_ALPHA, fit_goals, markets_json

    goals = fit_goals(predictor.standardise(ds.x), ds.home_goals, ds.away_goals, DEFAULT_GOALS_ALPHA)
    full = predictor.with_goals(goals)
    results["380-match season, grids (µs)"] = best_of(lambda: full.predict_grid(season), 50) * 1e6
    results["380-match season, grids + all markets as JSON (µs)"] = (
        best_of(lambda: markets_json(full.predict_grid(season)[1]), 20) * 1e6
    )
    results["1 match, grid + all markets as JSON (µs)"] = (
        best_of(lambda: markets_json(full.predict_grid(one)[1]), 200) * 1e6
    )

    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
