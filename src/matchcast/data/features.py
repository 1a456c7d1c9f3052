"""Per-match features from matches strictly before the match's date.

One code path serves training, evaluation and serving: ``compute_features`` walks every match in date order;
for each day it first records the features of all of that day's matches from the current state, then folds
in that day's results. A match therefore never sees its own result or anything later.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from typing import Protocol

from sqlalchemy import delete, insert, select, update

from matchcast.data.store import MatchFeatures, MatchStore
from matchcast.schemas import FEATURE_NAMES

FEATURE_CODE_VERSION = "1"
FEATURE_VERSION = f"v{FEATURE_CODE_VERSION}-" + hashlib.sha256(",".join(FEATURE_NAMES).encode()).hexdigest()[:8]

ELO_START = 1500.0
ELO_PROMOTED = 1420.0
ELO_K = 20.0
ELO_HOME = 60.0
SEASON_REGRESSION = 0.8
FORM_ALPHA = 0.15
LEAGUE_ALPHA = 0.01
REST_CAP = 30.0


class MatchLike(Protocol):
    """What feature building reads of a match."""

    match_id: int
    league: str
    season: str
    date: date
    home_team: str
    away_team: str
    home_goals: int | None
    away_goals: int | None
    stats: dict[str, int] | None


@dataclass
class _Team:
    elo: float
    season: str
    points: float = 1.35
    gf: float = 1.35
    ga: float = 1.35
    sot_f: float = 4.5
    sot_a: float = 4.5
    last: date | None = None


@dataclass
class _League:
    first_season: str
    home_adv: float = 0.35
    draw_rate: float = 0.26
    teams: dict[str, _Team] = field(default_factory=dict)


def _goal_multiplier(margin: int) -> float:
    m = abs(margin)
    return 1.0 if m <= 1 else 1.5 if m == 2 else (11.0 + m) / 8.0


def _ew(old: float, new: float, alpha: float) -> float:
    return (1.0 - alpha) * old + alpha * new


class FeatureState:
    """Ratings and form of every team, advanced result by result."""

    def __init__(self) -> None:
        self.leagues: dict[str, _League] = {}

    def _team(self, lg: _League, name: str, season: str) -> _Team:
        t = lg.teams.get(name)
        if t is None:
            start = ELO_START if season == lg.first_season else ELO_PROMOTED
            t = lg.teams[name] = _Team(elo=start, season=season)
        elif t.season != season:
            t.elo = SEASON_REGRESSION * t.elo + (1 - SEASON_REGRESSION) * ELO_START
            t.season = season
        return t

    def _league(self, m: MatchLike) -> _League:
        lg = self.leagues.get(m.league)
        if lg is None:
            lg = self.leagues[m.league] = _League(first_season=m.season)
        return lg

    def features(self, m: MatchLike) -> list[float]:
        """Features of ``m`` from the state as it is (call before folding in that day's results)."""
        lg = self._league(m)
        h, a = self._team(lg, m.home_team, m.season), self._team(lg, m.away_team, m.season)

        def rest(t: _Team) -> float:
            return REST_CAP if t.last is None else min(REST_CAP, float((m.date - t.last).days))

        return [
            h.elo,
            a.elo,
            h.points,
            a.points,
            h.gf,
            h.ga,
            a.gf,
            a.ga,
            h.sot_f,
            h.sot_a,
            a.sot_f,
            a.sot_a,
            rest(h),
            rest(a),
            lg.home_adv,
            lg.draw_rate,
        ]

    def update(self, m: MatchLike) -> None:
        """Fold in one match: its date always (fixtures are known ahead), its result when there is one."""
        lg = self._league(m)
        h, a = self._team(lg, m.home_team, m.season), self._team(lg, m.away_team, m.season)
        h.last = a.last = m.date
        if m.home_goals is None or m.away_goals is None:
            return
        hg, ag = m.home_goals, m.away_goals
        expected = 1.0 / (1.0 + math.pow(10.0, (a.elo - h.elo - ELO_HOME) / 400.0))
        actual = 1.0 if hg > ag else 0.5 if hg == ag else 0.0
        delta = ELO_K * _goal_multiplier(hg - ag) * (actual - expected)
        h.elo += delta
        a.elo -= delta
        h.points = _ew(h.points, 3.0 if hg > ag else 1.0 if hg == ag else 0.0, FORM_ALPHA)
        a.points = _ew(a.points, 3.0 if ag > hg else 1.0 if hg == ag else 0.0, FORM_ALPHA)
        h.gf, h.ga = _ew(h.gf, hg, FORM_ALPHA), _ew(h.ga, ag, FORM_ALPHA)
        a.gf, a.ga = _ew(a.gf, ag, FORM_ALPHA), _ew(a.ga, hg, FORM_ALPHA)
        stats = m.stats or {}
        if "HST" in stats and "AST" in stats:
            hst, ast = stats["HST"], stats["AST"]
            h.sot_f, h.sot_a = _ew(h.sot_f, hst, FORM_ALPHA), _ew(h.sot_a, ast, FORM_ALPHA)
            a.sot_f, a.sot_a = _ew(a.sot_f, ast, FORM_ALPHA), _ew(a.sot_a, hst, FORM_ALPHA)
        lg.home_adv = _ew(lg.home_adv, float(hg - ag), LEAGUE_ALPHA)
        lg.draw_rate = _ew(lg.draw_rate, 1.0 if hg == ag else 0.0, LEAGUE_ALPHA)


def compute_features(matches: Iterable[MatchLike]) -> dict[int, list[float]]:
    """Features of every match, keyed by match_id, each from strictly earlier matches."""
    state = FeatureState()
    out: dict[int, list[float]] = {}
    ordered = sorted(matches, key=lambda m: (m.date, m.match_id))
    for _, day in groupby(ordered, key=lambda m: m.date):
        todays: Sequence[MatchLike] = list(day)
        for m in todays:
            out[m.match_id] = [round(v, 6) for v in state.features(m)]
        for m in todays:
            state.update(m)
    return out


def refresh_features(store: MatchStore) -> int:
    """Recompute features for the whole store and write the rows that changed; returns how many."""
    computed = compute_features(store.all_matches())
    with store.session() as s:
        stored = {
            mid: (ver, vals)
            for mid, ver, vals in s.execute(
                select(MatchFeatures.match_id, MatchFeatures.feature_version, MatchFeatures.values)
            )
        }
        new = [
            {"match_id": k, "feature_version": FEATURE_VERSION, "values": v}
            for k, v in computed.items()
            if k not in stored
        ]
        changed = [
            {"match_id": k, "feature_version": FEATURE_VERSION, "values": v}
            for k, v in computed.items()
            if k in stored and stored[k] != (FEATURE_VERSION, v)
        ]
        gone = [k for k in stored if k not in computed]
        if new:
            s.execute(insert(MatchFeatures), new)
        if changed:
            s.execute(update(MatchFeatures), changed)
        if gone:
            s.execute(delete(MatchFeatures).where(MatchFeatures.match_id.in_(gone)))
    return len(new) + len(changed) + len(gone)


def history_counts(matches: Iterable[MatchLike]) -> dict[str, int]:
    """Finished matches per league (for reports)."""
    counts: dict[str, int] = defaultdict(int)
    for m in matches:
        if m.home_goals is not None:
            counts[m.league] += 1
    return dict(counts)
