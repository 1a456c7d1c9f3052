"""Live scores: the prediction log's counted predictions scored against the results, per model version and window.

Which prediction counts is ``data.prediction_log``'s rule (the last one served before the result arrived). The
windows go by match date, relative to the latest date among all scored matches (``latest``), so every version is
measured over the same days whatever the wall clock says (a replayed season too):

- ``7d``: matches dated in the 7 days up to ``latest`` (``latest - 6`` to ``latest``); ``30d`` likewise;
- ``season``: matches of the season of ``latest``;
- ``last200``: each version's 200 most recently dated scored matches (the alerts' window).

Each version is scored with ``model.scoring`` (RPS, log loss, Brier, accuracy), and so is the league-frequency
baseline of ``model.baselines`` on the same matches. Shadow rows (the challenger's) are scored apart, and paired
with the served rows of the same matches: the mean paired RPS difference, challenger minus champion, with its
standard error.

``leagues`` scores, per league over the season window, the served forecast that counts for each match (the last
one before its result, whichever version served it) against the baseline: the mean paired RPS difference and its
standard error.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from matchcast.config import CHALLENGER_ALIAS, Settings
from matchcast.data.prediction_log import CountedPrediction, counted_predictions, result_counts
from matchcast.data.store import MatchStore
from matchcast.metrics import HELDOUT_RPS, LIVE_BASELINE_RPS, LIVE_RPS, LIVE_SCORED, LIVE_SHADOW_RPS
from matchcast.model.baselines import frequency_forecasts
from matchcast.model.scoring import FloatArray, all_scores, outcome_index, rps_each
from matchcast.schemas import (
    LiveComparison,
    LiveLeague,
    LiveModel,
    LivePaired,
    LivePrediction,
    LivePredictionPage,
    LiveReport,
    LiveScores,
    LiveWindow,
    LiveWindowSpan,
    Probabilities,
)
from matchcast.service.lifecycle import METRIC
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger(__name__)
WINDOWS = ("7d", "30d", "season", "last200")
LAST_N = 200
RULE = (
    "per model version (shadow rows apart), the last prediction served before the match's result reached the "
    "store (served_at < result_at); windows by match date up to the latest scored match's"
)


def _scores(probs: FloatArray, y: np.ndarray) -> LiveScores | None:
    if not len(y):
        return None
    s = all_scores(probs, y)
    return LiveScores(rps=s["rps"], log_loss=s["log_loss"], brier=s["brier"], accuracy=s["accuracy"])


def _outcomes(rows: list[CountedPrediction]) -> npt.NDArray[np.int64]:
    """Outcome indices (every counted match has its result)."""
    return outcome_index([str(r.match.result) for r in rows])


def _probs(rows: list[CountedPrediction]) -> FloatArray:
    return np.array([r.probabilities for r in rows], dtype=np.float64).reshape(-1, 3)


@dataclass(frozen=True)
class Windows:
    """Which matches each window holds, fixed by the latest scored match date."""

    latest: date
    season: str

    def spans(self) -> dict[str, LiveWindowSpan]:
        """The date range (or season) of each window."""
        return {
            "7d": LiveWindowSpan(start=self.latest - timedelta(days=6), end=self.latest),
            "30d": LiveWindowSpan(start=self.latest - timedelta(days=29), end=self.latest),
            "season": LiveWindowSpan(season=self.season, end=self.latest),
            "last200": LiveWindowSpan(end=self.latest, last=LAST_N),
        }

    def select(self, rows: list[CountedPrediction], window: str) -> list[CountedPrediction]:
        """The rows (oldest first, as given) of ``window``."""
        if window == "last200":
            return rows[-LAST_N:]
        if window == "season":
            return [r for r in rows if r.match.season == self.season]
        days = 7 if window == "7d" else 30
        start = self.latest - timedelta(days=days - 1)
        return [r for r in rows if r.match.date >= start]


def live_report(
    store: MatchStore, roles: dict[str, str], heldout: Callable[[str], float | None]
) -> tuple[LiveReport, list[CountedPrediction], dict[int, FloatArray]]:
    """The live figures (and the counted predictions and baseline forecasts they come from).

    ``roles`` maps versions to their alias (``champion``, ``challenger``); ``heldout(version)`` gives a version's
    held-out RPS, or None."""
    counted = counted_predictions(store)
    now = datetime.now(UTC)
    if not counted:
        return LiveReport(computed_at=now, rule=RULE, windows={}, models=[], comparisons=[]), [], {}
    last = max(counted, key=lambda r: (r.match.date, r.match.match_id))
    windows = Windows(last.match.date, last.match.season)
    matches = {r.match.match_id: r for r in counted}
    history = result_counts(store, sorted({r.match.league for r in counted}))
    ids = list(matches)
    freq = frequency_forecasts(history, [(matches[i].match.league, matches[i].match.date) for i in ids])
    baseline = {i: freq[k] for k, i in enumerate(ids)}
    groups: dict[tuple[str, bool], list[CountedPrediction]] = defaultdict(list)
    for r in counted:
        groups[(r.model_version, r.shadow)].append(r)
    models = []
    for (version, shadow), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], _version_key(kv[0][0]))):
        per_window = {}
        for w in WINDOWS:
            chosen = windows.select(rows, w)
            y = _outcomes(chosen)
            base = np.array([baseline[r.match.match_id] for r in chosen]).reshape(-1, 3)
            per_window[w] = LiveWindow(n=len(chosen), model=_scores(_probs(chosen), y), baseline=_scores(base, y))
        models.append(
            LiveModel(
                model_version=version,
                shadow=shadow,
                role=roles.get(version),
                heldout_rps=heldout(version),
                windows=per_window,
            )
        )
    report = LiveReport(
        computed_at=now,
        latest_match_date=windows.latest,
        season=windows.season,
        rule=RULE,
        windows=windows.spans(),
        models=models,
        comparisons=_comparisons(groups, windows),
        leagues=league_scores(windows.select(_last_served(counted), "season"), baseline),
    )
    return report, counted, baseline


def _mean_se(d: FloatArray) -> tuple[float, float | None]:
    """A mean difference and its standard error (None below two values)."""
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None


def _last_served(counted: list[CountedPrediction]) -> list[CountedPrediction]:
    """Per match, the served forecast that counts whatever its version: the last one before the result."""
    last: dict[int, CountedPrediction] = {}
    for r in counted:
        if not r.shadow and (r.match.match_id not in last or r.served_at > last[r.match.match_id].served_at):
            last[r.match.match_id] = r
    return sorted(last.values(), key=lambda r: (r.match.date, r.match.match_id))


def league_scores(served: list[CountedPrediction], baseline: dict[int, FloatArray]) -> list[LiveLeague]:
    """Each league's served forecasts against the baseline on the same matches."""
    by_league: dict[str, list[CountedPrediction]] = defaultdict(list)
    for r in served:
        by_league[r.match.league].append(r)
    out = []
    for league, rows in sorted(by_league.items()):
        y = _outcomes(rows)
        probs, base = _probs(rows), np.array([baseline[r.match.match_id] for r in rows]).reshape(-1, 3)
        model, against = _scores(probs, y), _scores(base, y)
        assert model is not None and against is not None  # rows is never empty
        diff, se = _mean_se(rps_each(probs, y) - rps_each(base, y))
        out.append(LiveLeague(league=league, n=len(rows), model=model, baseline=against, rps_diff=diff, rps_diff_se=se))
    return out


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 30, version)


def _comparisons(groups: dict[tuple[str, bool], list[CountedPrediction]], windows: Windows) -> list[LiveComparison]:
    """Each challenger's shadow rows against each served version's rows of the same matches."""
    out = []
    for (challenger, shadow), shadow_rows in sorted(groups.items()):
        if not shadow:
            continue
        for (champion, served), served_rows in sorted(groups.items()):
            if served:
                continue
            theirs = {r.match.match_id: r for r in served_rows}
            pairs = [(theirs[r.match.match_id], r) for r in shadow_rows if r.match.match_id in theirs]
            if not pairs:
                continue
            per_window = {}
            for w in WINDOWS:
                chosen = windows.select([b for _, b in pairs], w)
                keep = {r.match.match_id for r in chosen}
                a = [p for p, b in pairs if b.match.match_id in keep]
                per_window[w] = _paired(a, chosen)
            out.append(LiveComparison(champion_version=champion, challenger_version=challenger, windows=per_window))
    return out


def _paired(champion: list[CountedPrediction], challenger: list[CountedPrediction]) -> LivePaired:
    n = len(challenger)
    if not n:
        return LivePaired(n=0)
    y = _outcomes(challenger)
    a, b = rps_each(_probs(champion), y), rps_each(_probs(challenger), y)
    diff, se = _mean_se(b - a)
    return LivePaired(n=n, champion_rps=float(a.mean()), challenger_rps=float(b.mean()), rps_diff=diff, rps_diff_se=se)


def prediction_rows(
    counted: list[CountedPrediction], baseline: dict[int, FloatArray], *, shadow: bool | None = None
) -> list[LivePrediction]:
    """The counted predictions as the API lists them, newest match first, each with its scores."""
    chosen = [r for r in counted if shadow is None or r.shadow == shadow]
    out = []
    for r in reversed(chosen):
        y = _outcomes([r])
        p = np.array([r.probabilities])
        base = np.atleast_2d(baseline[r.match.match_id])
        s = all_scores(p, y)
        out.append(
            LivePrediction(
                **asdict(r.match),
                result_at=r.result_at,
                model_version=r.model_version,
                shadow=r.shadow,
                source=r.source,
                served_at=r.served_at,
                feature_revision=r.feature_revision,
                probabilities=Probabilities(home=r.probabilities[0], draw=r.probabilities[1], away=r.probabilities[2]),
                rps=s["rps"],
                log_loss=s["log_loss"],
                hit=bool(s["accuracy"]),
                baseline_rps=float(rps_each(base, y)[0]),
            )
        )
    return out


def live_gate(comparison: LiveComparison | None, window: str = "season", *, min_n: int = 30, z: float = 2.0) -> str:
    """Why the challenger's live record does not justify promoting it, or "" when it does: on ``window``, at
    least ``min_n`` paired matches and a mean paired RPS difference below zero by more than ``z`` standard errors."""
    if comparison is None:
        return "no live comparison: the challenger has no shadow predictions of scored matches yet"
    w = comparison.windows.get(window)
    if w is None or w.n < min_n or w.rps_diff is None or w.rps_diff_se is None:
        return f"only {w.n if w else 0} paired scored matches in the {window} window (at least {min_n} needed)"
    if not w.rps_diff < -z * w.rps_diff_se:
        return (
            f"live paired RPS difference {w.rps_diff:+.5f} ± {w.rps_diff_se:.5f} over {w.n} matches ({window}) is "
            f"not below zero by {z:g} standard errors"
        )
    return ""


class LiveScoresService:
    """The live figures of one store and registry, computed at most once per ``ttl_s`` for all who ask."""

    def __init__(
        self,
        store: MatchStore,
        roles: Callable[[], dict[str, str]],
        heldout: Callable[[str], float | None],
        ttl_s: float,
    ) -> None:
        self.store, self.roles, self.heldout, self.ttl_s = store, roles, heldout, ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, LiveReport, list[CountedPrediction], dict[int, FloatArray]] | None = None

    def _snapshot(self) -> tuple[LiveReport, list[CountedPrediction], dict[int, FloatArray]]:
        with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
                return cached[1], cached[2], cached[3]
            roles = self.roles()
            report, counted, baseline = live_report(self.store, roles, self.heldout)
            self._cached = (time.monotonic(), report, counted, baseline)
        set_gauges(report, roles, self.heldout)
        return report, counted, baseline

    def report(self) -> LiveReport:
        """The figures (``GET /monitoring/live``); sets the live gauges."""
        return self._snapshot()[0]

    def predictions(self, *, limit: int, offset: int, shadow: bool | None = None) -> LivePredictionPage:
        """A page of the counted predictions, newest match first."""
        _, counted, baseline = self._snapshot()
        rows = [r for r in counted if shadow is None or r.shadow == shadow]
        page = prediction_rows(rows[::-1][offset : offset + limit][::-1], baseline)
        return LivePredictionPage(total=len(rows), limit=limit, offset=offset, items=page)


def set_gauges(report: LiveReport, roles: dict[str, str], heldout: Callable[[str], float | None]) -> None:
    """The Prometheus gauges of the champion's served rows and the challenger's shadow rows (others cleared)."""
    for gauge in (LIVE_RPS, LIVE_SHADOW_RPS, LIVE_BASELINE_RPS, LIVE_SCORED, HELDOUT_RPS):
        gauge.clear()
    for version, role in roles.items():
        rps = heldout(version)
        if rps is not None:
            HELDOUT_RPS.labels(model_version=version).set(rps)
        for m in report.models:
            if m.model_version != version or m.shadow != (role != "champion"):
                continue
            for w, figures in m.windows.items():
                if m.shadow:
                    if figures.model is not None:
                        LIVE_SHADOW_RPS.labels(model_version=version, window=w).set(figures.model.rps)
                    continue
                LIVE_SCORED.labels(model_version=version, window=w).set(figures.n)
                if figures.model is not None and figures.baseline is not None:
                    LIVE_RPS.labels(model_version=version, window=w).set(figures.model.rps)
                    LIVE_BASELINE_RPS.labels(model_version=version, window=w).set(figures.baseline.rps)


def live_service_for(settings: Settings) -> LiveScoresService:
    """The live scores of the store and registry these settings name."""
    registry = registry_for(settings)
    heldout: dict[str, float | None] = {}  # a version's run metrics never change

    def roles() -> dict[str, str]:
        found = {}
        for alias in (CHALLENGER_ALIAS, settings.model_alias):
            version = registry.version_of(alias)
            if version is not None:
                found[version] = "champion" if alias == settings.model_alias else alias
        return found

    def heldout_rps(version: str) -> float | None:
        if version not in heldout:
            try:
                heldout[version] = registry.info(version=version).metrics.get(METRIC)
            except Exception as exc:  # the registry may be away: ask again next time
                log.debug("no held-out RPS for version %s: %s", version, exc)
                return None
        return heldout[version]

    return LiveScoresService(store_for(settings), roles, heldout_rps, settings.live_cache_s)


def live_comparison(settings: Settings, challenger: str) -> LiveComparison | None:
    """The live paired comparison of ``challenger``'s shadow predictions with the serving champion's, if any."""
    report = live_service_for(settings).report()
    champion = next((m.model_version for m in report.models if m.role == "champion" and not m.shadow), None)
    return next(
        (c for c in report.comparisons if c.challenger_version == challenger and c.champion_version == champion),
        None,
    )
