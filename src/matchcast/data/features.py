"""Per-match features from matches strictly before the match's date.

One code path serves training, evaluation and serving: ``compute_features`` walks every match in date order;
for each day it first records the features of all of that day's matches from the current state, then folds
in that day's results. A match therefore never sees its own result or anything later.

Per league, the state holds for every team:

- two Elo ratings (slow and fast K) with goal-margin multipliers, regressed to the mean between seasons; a
  team promoted into the league starts below the mean;
- pi-ratings (Constantinou & Fenton 2013): a home and an away rating in goal-difference units;
- exponentially weighted form: points, goals, shots and shots on target for and against, over all matches and
  over home matches only (for the home side) or away matches only (for the away side); corners and first-half
  goals for and against, over all matches;
- the date of its last match (rest days) and whether it was promoted this season;

and for the league: time-decayed Poisson attack/defence ratings fitted on goals, on shots on target and on a
blend of the two (refitted, warm-started, on every match day with new results), which give expected goals and
Dixon-Coles-adjusted home/draw/away probabilities; a rolling home advantage, draw rate and goals per match; and
whether the match was played without crowds (2020-21). The constants were tuned on seasons before 2020/21.

Features are computed by name (``FeatureState.named_features``); ``feature_row`` alone puts them in order, that of
``FEATURE_NAMES`` (the schema's fields), for the model's columns and the stored rows.

Past 400 lines on purpose: the ratings, the Poisson fits and the form tables are folded in one date-ordered pass
over one state (``FeatureState``); split across modules, each would reach into the others' share of that state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from matchcast.data import feature_refresh
from matchcast.data.store import MatchFeatures, MatchStore
from matchcast.schemas import FEATURE_NAMES

FEATURE_CODE_VERSION = "4"
FEATURE_VERSION = f"v{FEATURE_CODE_VERSION}-" + hashlib.sha256(",".join(FEATURE_NAMES).encode()).hexdigest()[:8]
_NAME_SET = frozenset(FEATURE_NAMES)


def feature_row(values: Mapping[str, float]) -> list[float]:
    """Features by name as a row in ``FEATURE_NAMES`` order: the model's columns and the stored rows' order."""
    if values.keys() != _NAME_SET:
        missing, unknown = sorted(_NAME_SET - values.keys()), sorted(values.keys() - _NAME_SET)
        raise ValueError(f"features do not match FEATURE_NAMES: missing {missing}, unknown {unknown}")
    return [values[n] for n in FEATURE_NAMES]


@dataclass(frozen=True)
class FeatureParams:
    """Rating constants, decay rates and priors (tuned on seasons before 2020/21).

    The Poisson decay and window, form and venue decay rates and pi_gamma were retuned on the walk-forward
    windows 2014/15-2018/19 and 2015/16-2019/20 (pooled RPS about -0.00015 on each; see README).
    """

    elo_start: float = 1500.0
    elo_promoted: float = 1420.0
    elo_k: float = 20.0
    elo_k_fast: float = 45.0
    elo_home: float = 60.0
    season_regression: float = 0.8
    pi_lambda: float = 0.035
    pi_gamma: float = 0.5
    pi_promoted: float = -0.4
    form_alpha: float = 0.22
    venue_alpha: float = 0.3
    league_alpha: float = 0.01
    pois_xi: float = 0.0015  # per day
    pois_window_days: int = 2200
    pois_prior: float = 10.0  # pseudo-matches pulling a team towards its prior strength
    pois_iters: int = 3
    pois_rho: float = -0.06
    promoted_attack: float = 0.82
    promoted_defence: float = 1.18
    mix_beta: float = 0.4  # weight of shots on target in the blended model
    mix_conversion: float = 0.3  # goals per shot on target
    rest_cap: float = 30.0
    # Share of the usual home advantage left without crowds: log(1.13) / log(1.30), the home/away goal ratios of
    # the 2019/20 restart (408 matches behind closed doors) and of the five seasons before it.
    no_crowd_home_share: float = 0.45


DEFAULT_PARAMS = FeatureParams()

# Matches played behind closed doors (or nearly so), first and last day per league: known before kick-off.
# Home advantage shrinks without crowds: Elo, pi-ratings and the Poisson ratings expect only a share of it in
# these matches, so the season without crowds does not drag every team's home rating down.
NO_CROWD: dict[str, tuple[date, date]] = {
    "premier-league": (date(2020, 6, 17), date(2021, 5, 16)),
    "la-liga": (date(2020, 6, 11), date(2021, 5, 23)),
    "serie-a": (date(2020, 6, 20), date(2021, 5, 23)),
    "bundesliga": (date(2020, 5, 16), date(2021, 5, 22)),
    "ligue-1": (date(2020, 8, 21), date(2021, 5, 23)),
}


def without_crowd(league: str, day: date) -> bool:
    """True for a match played behind closed doors."""
    closed = NO_CROWD.get(league)
    return closed is not None and closed[0] <= day <= closed[1]


# A team's form, by key, and the feature each key gives: "{stem}_home" from the home side, "{stem}_away" from the away.
_FORM_FEATURES = {
    **{"points": "form_points", "gf": "goals_for", "ga": "goals_against", "sf": "shots_for", "sa": "shots_against"},
    **{"sotf": "sot_for", "sota": "sot_against", "cf": "corners_for", "ca": "corners_against"},
    **{"htf": "ht_goals_for", "hta": "ht_goals_against"},
}
# Form at home (home side) or away (away side) only.
_VENUE_FEATURES = {
    **{"points": "venue_points", "gf": "venue_goals_for", "ga": "venue_goals_against"},
    **{"sotf": "venue_sot_for", "sota": "venue_sot_against"},
}
_FORM_KEYS = tuple(_FORM_FEATURES)
_VENUE_KEYS = tuple(_VENUE_FEATURES)
_OUTCOMES = ("home", "draw", "away")
_PRIOR = {
    **{"points": 1.35, "gf": 1.35, "ga": 1.35, "sf": 12.5, "sa": 12.5, "sotf": 4.5, "sota": 4.5},
    **{"cf": 5.0, "ca": 5.0, "htf": 0.6, "hta": 0.6},
}
_PROMOTED = {
    **{"points": 1.05, "gf": 1.1, "ga": 1.6, "sf": 11.0, "sa": 14.0, "sotf": 3.8, "sota": 5.2},
    **{"cf": 4.5, "ca": 5.6, "htf": 0.5, "hta": 0.7},
}


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


class _Team:
    __slots__ = ("away_form", "elo", "elo_fast", "form", "home_form", "last", "pi_a", "pi_h", "promoted", "season")

    def __init__(self, p: FeatureParams, season: str, promoted: bool) -> None:
        self.elo = self.elo_fast = p.elo_promoted if promoted else p.elo_start
        self.pi_h = self.pi_a = p.pi_promoted if promoted else 0.0
        base = _PROMOTED if promoted else _PRIOR
        self.form = {k: base[k] for k in _FORM_KEYS}
        self.home_form = {k: base[k] for k in _VENUE_KEYS}
        self.away_form = {k: base[k] for k in _VENUE_KEYS}
        self.season = season
        self.promoted = promoted
        self.last: date | None = None


class PoissonRatings:
    """Time-decayed attack/defence Poisson ratings of one league.

    ``lambda_home = base * home * attack[h] * defence[a]``, ``lambda_away = base * attack[a] * defence[h]``,
    fitted by a few warm-started rounds of closed-form coordinate updates on the matches of the last
    ``pois_window_days`` weighted by ``exp(-xi * age)``, each team pulled towards its prior strength by
    ``pois_prior`` pseudo-matches. Refitted lazily: only when results came in since the last fit.
    """

    def __init__(self, p: FeatureParams) -> None:
        self.p = p
        self.idx: dict[str, int] = {}
        cap = 2048
        self.h = np.zeros(cap, np.int64)
        self.a = np.zeros(cap, np.int64)
        self.hg = np.zeros(cap)
        self.ag = np.zeros(cap)
        self.day = np.zeros(cap, np.int64)
        self.home_exp = np.ones(cap)  # 1 with crowds, ``no_crowd_home_share`` without
        self.n = self.start = 0
        self.att, self.dfn, self.att0, self.dfn0 = (np.ones(64) for _ in range(4))
        self.base, self.home = 1.1, 1.3
        self.dirty = False

    def team(self, name: str, promoted: bool | None = None) -> int:
        """The team's index; ``promoted`` True sets a promoted side's prior, False the league average's."""
        i = self.idx.get(name)
        if i is None:
            i = self.idx[name] = len(self.idx)
            if i >= len(self.att):
                self.att, self.dfn, self.att0, self.dfn0 = (
                    np.concatenate([x, np.ones(len(x))]) for x in (self.att, self.dfn, self.att0, self.dfn0)
                )
        if promoted is True:
            self.att0[i] = self.att[i] = self.p.promoted_attack
            self.dfn0[i] = self.dfn[i] = self.p.promoted_defence
        elif promoted is False:
            self.att0[i] = self.dfn0[i] = 1.0
        return i

    def add(self, home: str, away: str, hg: float, ag: float, day: int, home_exp: float = 1.0) -> None:
        """Record a result (the next fit sees it); the home factor counts ``home ** home_exp`` in it."""
        if self.n == len(self.h):
            self.h, self.a, self.hg, self.ag, self.day, self.home_exp = (
                np.concatenate([x, np.zeros_like(x)])
                for x in (self.h, self.a, self.hg, self.ag, self.day, self.home_exp)
            )
        n = self.n
        self.h[n], self.a[n], self.hg[n], self.ag[n], self.day[n] = self.idx[home], self.idx[away], hg, ag, day
        self.home_exp[n] = home_exp
        self.n += 1
        self.dirty = True

    def fit(self, today: int) -> None:
        """Refit on the window before ``today`` if results came in since the last fit."""
        if not self.dirty:
            return
        self.dirty = False
        p = self.p
        while self.start < self.n and self.day[self.start] < today - p.pois_window_days:
            self.start += 1
        s, e = self.start, self.n
        if e - s < 10:
            return
        h, a, ex = self.h[s:e], self.a[s:e], self.home_exp[s:e]
        w = np.exp(-p.pois_xi * (today - self.day[s:e]))
        whg, wag = w * self.hg[s:e], w * self.ag[s:e]
        nt = len(self.idx)
        att, dfn = self.att[:nt].copy(), self.dfn[:nt].copy()
        att0, dfn0, k = self.att0[:nt], self.dfn0[:nt], p.pois_prior
        scored = np.bincount(h, whg, nt) + np.bincount(a, wag, nt)
        conceded = np.bincount(h, wag, nt) + np.bincount(a, whg, nt)
        base, home = self.base, self.home
        for _ in range(p.pois_iters):
            hm = home**ex
            eh, ea = w * base * hm * dfn[a], w * base * dfn[h]
            att = (scored + k * att0) / (np.bincount(h, eh, nt) + np.bincount(a, ea, nt) + k)
            eh, ea = w * base * hm * att[h], w * base * att[a]
            dfn = (conceded + k * dfn0) / (np.bincount(a, eh, nt) + np.bincount(h, ea, nt) + k)
            m = w * base * att[h] * dfn[a]
            home *= float((ex * whg).sum()) / max(float((ex * m * hm).sum()), 1e-9)
            hm = home**ex
            base = (whg.sum() + wag.sum()) / max(float((w * (hm * att[h] * dfn[a] + att[a] * dfn[h])).sum()), 1e-9)
        self.att[:nt], self.dfn[:nt], self.base, self.home = att, dfn, float(base), float(home)

    def rates(self, home: str, away: str, home_exp: float = 1.0) -> tuple[float, float]:
        """Expected home and away counts (the home factor raised to ``home_exp``)."""
        h, a = self.idx[home], self.idx[away]
        return (
            float(self.base * self.home**home_exp * self.att[h] * self.dfn[a]),
            float(self.base * self.att[a] * self.dfn[h]),
        )


_GOALS = np.arange(11)
_LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in _GOALS])


def outcome_probabilities(lam_home: float, lam_away: float, rho: float) -> tuple[float, float, float]:
    """Home/draw/away probabilities of independent Poisson scores with the Dixon-Coles low-score correction."""
    lh, la = max(lam_home, 1e-6), max(lam_away, 1e-6)
    ph: npt.NDArray[np.float64] = np.exp(_GOALS * math.log(lh) - lh - _LOG_FACTORIAL)
    pa: npt.NDArray[np.float64] = np.exp(_GOALS * math.log(la) - la - _LOG_FACTORIAL)
    g = np.outer(ph, pa)
    rho = min(max(rho, max(-1.0 / lh, -1.0 / la)), min(1.0, 1.0 / (lh * la)))
    g[0, 0] *= 1.0 - lh * la * rho
    g[0, 1] *= 1.0 + lh * rho
    g[1, 0] *= 1.0 + la * rho
    g[1, 1] *= 1.0 - rho
    total = float(g.sum())
    draw = float(np.trace(g)) / total
    home = float(np.tril(g, -1).sum()) / total
    return max(home, 1e-9), max(draw, 1e-9), max(1.0 - home - draw, 1e-9)


@dataclass
class _League:
    first_season: str
    season: str
    goals: PoissonRatings
    sot: PoissonRatings
    mix: PoissonRatings
    previous: set[str] = field(default_factory=set)
    current: set[str] = field(default_factory=set)
    home_adv: float = 0.35
    crowd_home_adv: float = 0.35  # like home_adv, over matches with crowds only
    draw_rate: float = 0.26
    goals_per_match: float = 2.6
    teams: dict[str, _Team] = field(default_factory=dict)
    last_result: date | None = None  # the date of the latest result folded in

    @property
    def models(self) -> tuple[PoissonRatings, PoissonRatings, PoissonRatings]:
        return self.goals, self.sot, self.mix


def _goal_multiplier(margin: int) -> float:
    m = abs(margin)
    return 1.0 if m <= 1 else 1.5 if m == 2 else (11.0 + m) / 8.0


def _pi_goals(rating: float) -> float:
    return math.copysign(10.0 ** (abs(rating) / 3.0) - 1.0, rating)


def _elo_delta(k: float, home: float, away: float, home_adv: float, actual: float, mult: float) -> float:
    expected = 1.0 / (1.0 + 10.0 ** ((away - home - home_adv) / 400.0))
    return k * mult * (actual - expected)


class FeatureState:
    """Ratings and form of every team, advanced result by result."""

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS) -> None:
        self.p = params
        self.leagues: dict[str, _League] = {}

    def _league(self, m: MatchLike) -> _League:
        lg = self.leagues.get(m.league)
        if lg is None:
            p = self.p
            lg = _League(m.season, m.season, PoissonRatings(p), PoissonRatings(p), PoissonRatings(p))
            self.leagues[m.league] = lg
        if m.season > lg.season:
            lg.previous, lg.current, lg.season = lg.current, set(), m.season
        return lg

    def _team(self, lg: _League, name: str, season: str) -> _Team:
        p = self.p
        t = lg.teams.get(name)
        if t is None or (t.season != season and name not in lg.previous):
            promoted = season != lg.first_season
            old, t = t, _Team(p, season, promoted)
            lg.teams[name] = t
            if old is not None:  # back after years away: half of what it was
                t.elo, t.elo_fast = 0.5 * (old.elo + t.elo), 0.5 * (old.elo_fast + t.elo_fast)
            for model in lg.models:
                model.team(name, promoted)
        elif t.season != season:
            r = p.season_regression
            t.elo = r * t.elo + (1 - r) * p.elo_start
            t.elo_fast = r * t.elo_fast + (1 - r) * p.elo_start
            t.season, t.promoted = season, False
            for model in lg.models:
                model.team(name, False)
        lg.current.add(name)
        return t

    def named_features(self, m: MatchLike) -> dict[str, float]:
        """Features of ``m`` by name, from the state as it is (call before folding in that day's results)."""
        p = self.p
        lg = self._league(m)
        h, a = self._team(lg, m.home_team, m.season), self._team(lg, m.away_team, m.season)
        today = m.date.toordinal()
        for model in lg.models:
            model.fit(today)
        closed = without_crowd(m.league, m.date)
        ex = p.no_crowd_home_share if closed else 1.0
        xh, xa = lg.goals.rates(m.home_team, m.away_team, ex)
        sh, sa = lg.sot.rates(m.home_team, m.away_team, ex)
        mh, ma = lg.mix.rates(m.home_team, m.away_team, ex)
        conversion = (lg.goals.base * (1 + lg.goals.home)) / max(lg.sot.base * (1 + lg.sot.home), 1e-9)
        pg = outcome_probabilities(xh, xa, p.pois_rho)
        ps = outcome_probabilities(sh * conversion, sa * conversion, p.pois_rho)
        pm = outcome_probabilities(mh, ma, p.pois_rho)

        def rest(t: _Team) -> float:
            return p.rest_cap if t.last is None else min(p.rest_cap, float((m.date - t.last).days))

        out = {
            **{"elo_home": h.elo, "elo_away": a.elo, "elo_fast_home": h.elo_fast, "elo_fast_away": a.elo_fast},
            **{"pi_home_h": h.pi_h, "pi_home_a": h.pi_a, "pi_away_h": a.pi_h, "pi_away_a": a.pi_a},
            **{"xg_home": xh, "xg_away": xa, "xsot_home": sh, "xsot_away": sa, "xmix_home": mh, "xmix_away": ma},
            **{"league_home_adv": lg.home_adv, "league_draw_rate": lg.draw_rate, "league_goals": lg.goals_per_match},
            "no_crowd": 1.0 if closed else 0.0,
        }
        for prefix, probs in (("xg", pg), ("xsot", ps), ("xmix", pm)):
            out |= {f"{prefix}_logp_{o}": math.log(v) for o, v in zip(_OUTCOMES, probs, strict=True)}
        for side, t, venue in (("home", h, h.home_form), ("away", a, a.away_form)):
            out |= {f"{stem}_{side}": t.form[k] for k, stem in _FORM_FEATURES.items()}
            out |= {f"{stem}_{side}": venue[k] for k, stem in _VENUE_FEATURES.items()}
            out[f"rest_days_{side}"] = rest(t)
            out[f"promoted_{side}"] = 1.0 if t.promoted else 0.0
        return out

    def features(self, m: MatchLike) -> list[float]:
        """``named_features`` of ``m`` as a row ordered by ``FEATURE_NAMES``."""
        return feature_row(self.named_features(m))

    def as_of(self, league: str) -> date | None:
        """The date of the latest result of ``league`` folded in so far (None before the first)."""
        lg = self.leagues.get(league)
        return None if lg is None else lg.last_result

    def update(self, m: MatchLike) -> None:
        """Fold in one match: its date always (fixtures are known ahead), its result when there is one."""
        p = self.p
        lg = self._league(m)
        h, a = self._team(lg, m.home_team, m.season), self._team(lg, m.away_team, m.season)
        h.last = a.last = m.date
        if m.home_goals is None or m.away_goals is None:
            return
        hg, ag = m.home_goals, m.away_goals
        closed = without_crowd(m.league, m.date)
        share = p.no_crowd_home_share if closed else 1.0
        mult = _goal_multiplier(hg - ag)
        actual = 1.0 if hg > ag else 0.5 if hg == ag else 0.0
        d = _elo_delta(p.elo_k, h.elo, a.elo, p.elo_home * share, actual, mult)
        h.elo, a.elo = h.elo + d, a.elo - d
        d = _elo_delta(p.elo_k_fast, h.elo_fast, a.elo_fast, p.elo_home * share, actual, mult)
        h.elo_fast, a.elo_fast = h.elo_fast + d, a.elo_fast - d
        expected_gd = _pi_goals(h.pi_h) - _pi_goals(a.pi_a) - (1.0 - share) * lg.crowd_home_adv
        err = (hg - ag) - expected_gd
        step = math.copysign(3.0 * math.log10(1.0 + abs(err)), err) * p.pi_lambda
        h.pi_h, h.pi_a = h.pi_h + step, h.pi_a + step * p.pi_gamma
        a.pi_a, a.pi_h = a.pi_a - step, a.pi_h - step * p.pi_gamma

        stats = m.stats or {}
        obs_h: dict[str, float] = {"points": 3.0 if hg > ag else 1.0 if hg == ag else 0.0, "gf": hg, "ga": ag}
        obs_a: dict[str, float] = {"points": 3.0 if ag > hg else 1.0 if hg == ag else 0.0, "gf": ag, "ga": hg}
        if "HS" in stats and "AS" in stats:
            obs_h |= {"sf": stats["HS"], "sa": stats["AS"]}
            obs_a |= {"sf": stats["AS"], "sa": stats["HS"]}
        if "HC" in stats and "AC" in stats:
            obs_h |= {"cf": stats["HC"], "ca": stats["AC"]}
            obs_a |= {"cf": stats["AC"], "ca": stats["HC"]}
        if "HTHG" in stats and "HTAG" in stats:
            obs_h |= {"htf": stats["HTHG"], "hta": stats["HTAG"]}
            obs_a |= {"htf": stats["HTAG"], "hta": stats["HTHG"]}
        has_sot = "HST" in stats and "AST" in stats
        if has_sot:
            obs_h |= {"sotf": stats["HST"], "sota": stats["AST"]}
            obs_a |= {"sotf": stats["AST"], "sota": stats["HST"]}
        for t, obs, venue in ((h, obs_h, h.home_form), (a, obs_a, a.away_form)):
            for key, v in obs.items():
                t.form[key] += p.form_alpha * (v - t.form[key])
                if key in venue:
                    venue[key] += p.venue_alpha * (v - venue[key])

        lg.home_adv += p.league_alpha * ((hg - ag) - lg.home_adv)
        if not closed:
            lg.crowd_home_adv += p.league_alpha * ((hg - ag) - lg.crowd_home_adv)
        lg.draw_rate += p.league_alpha * ((1.0 if hg == ag else 0.0) - lg.draw_rate)
        lg.goals_per_match += p.league_alpha * ((hg + ag) - lg.goals_per_match)
        lg.last_result = m.date
        today = m.date.toordinal()
        lg.goals.add(m.home_team, m.away_team, hg, ag, today, share)
        mix_h, mix_a = float(hg), float(ag)
        if has_sot:
            lg.sot.add(m.home_team, m.away_team, stats["HST"], stats["AST"], today, share)
            b, c = p.mix_beta, p.mix_conversion
            mix_h = (1 - b) * hg + b * c * stats["HST"]
            mix_a = (1 - b) * ag + b * c * stats["AST"]
        lg.mix.add(m.home_team, m.away_team, mix_h, mix_a, today, share)


def walk(
    matches: Iterable[MatchLike], state: FeatureState, *, snapshot_at: date | None = None
) -> tuple[dict[int, tuple[list[float], date | None]], FeatureState | None]:
    """Advance ``state`` over ``matches`` day by day: {match_id: (feature row, as_of)}, and with ``snapshot_at``
    a copy of the state as it was before the first day on or after that date (or at the end, if none is).

    Each day, the features of all its matches are taken from the state first, then its results are folded in.
    Leagues never share state, so walking one league alone gives its matches the features a walk of all gives."""
    out: dict[int, tuple[list[float], date | None]] = {}
    snapshot: FeatureState | None = None
    ordered = sorted(matches, key=lambda m: (m.date, m.match_id))
    for day, group in groupby(ordered, key=lambda m: m.date):
        if snapshot_at is not None and snapshot is None and day >= snapshot_at:
            snapshot = copy.deepcopy(state)
        todays: Sequence[MatchLike] = list(group)
        for m in todays:
            out[m.match_id] = ([round(v, 6) for v in state.features(m)], state.as_of(m.league))
        for m in todays:
            state.update(m)
    if snapshot_at is not None and snapshot is None:
        snapshot = copy.deepcopy(state)
    return out, snapshot


def compute_features(matches: Iterable[MatchLike], params: FeatureParams = DEFAULT_PARAMS) -> dict[int, list[float]]:
    """Features of every match, keyed by match_id, each from strictly earlier matches (rows as ``feature_row``)."""
    return {k: row for k, (row, _) in walk(matches, FeatureState(params))[0].items()}


def feature_revision(
    values: Sequence[float], score: tuple[int | None, int | None] = (None, None), version: str = FEATURE_VERSION
) -> str:
    """A short digest of a feature row, its version and its match's own score: it changes exactly when one of them
    does (so a prediction made before the match's result arrived is never served again as if it were current)."""
    played = "" if score == (None, None) else f":{score[0]}-{score[1]}"
    return hashlib.sha256(f"{version}:{json.dumps(list(values))}{played}".encode()).hexdigest()[:16]


def features_stale(store: MatchStore) -> bool:
    """Whether the store lacks feature rows, or holds rows of another feature version (code changed since), or
    rows written before revisions existed."""
    with store.session() as s:
        other = s.execute(
            select(MatchFeatures.match_id)
            .where((MatchFeatures.feature_version != FEATURE_VERSION) | MatchFeatures.revision.is_(None))
            .limit(1)
        ).first()
        some = s.execute(select(MatchFeatures.match_id).limit(1)).first()
    return other is not None or some is None


def refresh_features(store: MatchStore) -> int:
    """Bring the stored features up to date with the matches; returns how many rows changed.

    Per league, the walk resumes from the league's checkpoint (its state before its first match without a
    result) when nothing before that date changed, and starts over otherwise (a rewritten past, a league without
    a checkpoint, features of another version). Everything happens in one transaction that first takes the next
    change number (``feature_sequence``): readers see all of a refresh or none of it, and refreshes of several
    hosts take turns."""
    return feature_refresh.refresh(store, FEATURE_VERSION, _refresh_league, feature_revision)


def _refresh_league(
    matches: Sequence[feature_refresh.StoredMatch], before: date, resume: FeatureState | None
) -> tuple[dict[int, tuple[list[float], date | None]], FeatureState]:
    """One league's walk: from ``resume`` over ``matches`` (those after its checkpoint), or from the start."""
    computed, snapshot = walk(matches, resume or FeatureState(), snapshot_at=before)
    assert snapshot is not None
    return computed, snapshot


def history_counts(matches: Iterable[MatchLike]) -> dict[str, int]:
    """Finished matches per league (for reports)."""
    counts: dict[str, int] = defaultdict(int)
    for m in matches:
        if m.home_goals is not None:
            counts[m.league] += 1
    return dict(counts)
