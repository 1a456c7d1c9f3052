"""One matchday ingested into the full store: the incremental feature refresh against a full recompute (issue 14).

    .venv/bin/python benchmarks/bench_ingest.py [--as-of 2026-03-06] [--days 3] [--repeat 3]

Builds a store of every bundled match (59,079) ingested as of ``--as-of`` (results from that date on held back),
with its features and checkpoints (``refresh_features``). Then, on copies of that store, the matchday arrives:
the 2025/26 files of all five leagues ingested again as of ``--as-of`` + ``--days`` (the results of those days;
the fixtures are the season's own), then

- **incremental**: ``refresh_features`` as every ingest calls it (each league resumes from its checkpoint);
- **full**: the same call with the checkpoints removed, so every league is walked from its first match: the
  recompute of every match that each ingest did before (walk everything, write the rows that changed).

Both end with the same stored rows (checked). Times are wall seconds on this machine (shared: noisy); the
incremental figure is the median of ``--repeat`` runs, each on a fresh copy; the full one is one run.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 3, 6), help="the store's date")
    parser.add_argument("--days", type=int, default=3, help="days of results in the matchday (Friday to Sunday)")
    parser.add_argument("--repeat", type=int, default=3, help="incremental runs (median)")
    args = parser.parse_args()

    from sqlalchemy import delete, select

    from matchcast.data.features import refresh_features
    from matchcast.data.ingest import bundled_files, ingest
    from matchcast.data.store import FeatureCheckpoint, MatchFeatures, MatchStore, get_engine

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    base_path = tmp / "base.db"
    base = MatchStore(f"sqlite:///{base_path}")
    t0 = time.perf_counter()
    ingest(base, bundled_files(), as_of=args.as_of)
    refresh_features(base)
    print(f"base store: {base.count()} matches as of {args.as_of} ({time.perf_counter() - t0:.1f} s to build)")
    get_engine(base.url).dispose()

    season = [p for p in bundled_files() if p.name == "season-2526.csv"]
    until = args.as_of + timedelta(days=args.days)

    def copy(name: str) -> MatchStore:
        path = tmp / f"{name}.db"
        with sqlite3.connect(base_path) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        return MatchStore(f"sqlite:///{path}")

    def matchday(store: MatchStore, *, full: bool) -> tuple[float, float, int, int]:
        t0 = time.perf_counter()
        report = ingest(store, season, as_of=until)
        t1 = time.perf_counter()
        if full:
            with store.session() as s:
                s.execute(delete(FeatureCheckpoint))
        t2 = time.perf_counter()
        written = refresh_features(store)
        return t1 - t0, time.perf_counter() - t2, report.updated + report.inserted, written

    def rows(store: MatchStore) -> dict[int, tuple[str, list[float]]]:
        with store.session() as s:
            found = s.execute(select(MatchFeatures.match_id, MatchFeatures.revision, MatchFeatures.values))
            return {mid: (rev, list(v)) for mid, rev, v in found}

    incremental = []
    for n in range(args.repeat):
        store = copy(f"incremental-{n}")
        incremental.append(matchday(store, full=False))
    store_full = copy("full")
    full = matchday(store_full, full=True)
    same = rows(store) == rows(store_full)

    ingest_s = statistics.median(r[0] for r in incremental)
    inc_s = statistics.median(r[1] for r in incremental)
    print(f"matchday: results of {args.as_of} to {until - timedelta(days=1)}: {incremental[0][2]} matches updated,")
    print(f"          {incremental[0][3]} feature rows rewritten (full: {full[3]}); same rows after both: {same}")
    print(f"{'':<34}{'ingest (s)':>12}{'features (s)':>14}{'total (s)':>11}")
    print(
        f"{'incremental (median of ' + str(args.repeat) + ')':<34}"
        f"{ingest_s:>12.2f}{inc_s:>14.2f}{ingest_s + inc_s:>11.2f}"
    )
    print(f"{'full recompute':<34}{full[0]:>12.2f}{full[1]:>14.2f}{full[0] + full[1]:>11.2f}")
    print(
        f"ratio full / incremental: features {full[1] / inc_s:.1f}x, "
        f"total {(full[0] + full[1]) / (ingest_s + inc_s):.1f}x"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
