"""Features use only earlier matches: changing later results changes nothing before them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np
import pytest

from matchcast.data.features import (
    FEATURE_VERSION,
    FeatureState,
    compute_features,
    outcome_probabilities,
    without_crowd,
)
from matchcast.data.ingest import bundled_files, parse_file
from matchcast.schemas import FEATURE_NAMES


@dataclass(frozen=True)
class M:
    match_id: int
    league: str
    season: str
    date: date
    home_team: str
    away_team: str
    home_goals: int | None
    away_goals: int | None
    stats: dict[str, int] | None = None


def season_rows(league: str = "premier-league", season: str = "season-2324.csv") -> list[M]:
    path = next(p for p in bundled_files() if p.parent.name == league and p.name == season)
    rows, _ = parse_file(path)
    return [
        M(i + 1, r.league, r.season, r.date, r.home_team, r.away_team, r.home_goals, r.away_goals, r.stats)
        for i, r in enumerate(rows)
    ]


def test_one_value_per_feature_name() -> None:
    feats = compute_features(season_rows())
    assert all(len(v) == len(FEATURE_NAMES) for v in feats.values())
    assert FEATURE_VERSION.startswith("v")


def test_changing_later_results_leaves_earlier_features_alone() -> None:
    rows = season_rows()
    cut = rows[len(rows) // 2].date
    before = compute_features(rows)
    flipped = [
        replace(m, home_goals=m.away_goals, away_goals=(m.home_goals or 0) + 3) if m.date >= cut else m for m in rows
    ]
    after = compute_features(flipped)
    for m in rows:
        if m.date <= cut:  # same-day matches must not see each other's results either
            assert before[m.match_id] == after[m.match_id], m
    later = [m.match_id for m in rows if m.date > cut + timedelta(days=7)]
    assert any(before[i] != after[i] for i in later)  # the test can fail: later features do move


def test_a_match_never_sees_its_own_result() -> None:
    rows = season_rows()
    target = rows[200]
    changed = [replace(m, home_goals=9, away_goals=0) if m.match_id == target.match_id else m for m in rows]
    assert compute_features(rows)[target.match_id] == compute_features(changed)[target.match_id]


def test_features_separate_strong_and_weak_teams() -> None:
    rows = season_rows()
    feats = compute_features(rows)
    last = [m for m in rows if m.date == max(r.date for r in rows)]
    elos = {m.home_team: feats[m.match_id][0] for m in last} | {m.away_team: feats[m.match_id][1] for m in last}
    assert np.std(list(elos.values())) > 30


def test_fixtures_without_results_are_featured_from_history() -> None:
    rows = season_rows()
    fixture = M(
        10_000,
        rows[0].league,
        rows[0].season,
        rows[-1].date + timedelta(days=100),
        rows[0].home_team,
        rows[0].away_team,
        None,
        None,
    )
    feats = compute_features([*rows, fixture])
    assert feats[fixture.match_id] != compute_features([*rows[:1], fixture])[fixture.match_id]


def two_seasons() -> list[M]:
    first = season_rows(season="season-2223.csv")
    second = season_rows(season="season-2324.csv")
    return first + [replace(m, match_id=m.match_id + len(first)) for m in second]


def test_promoted_teams_are_flagged_and_start_low() -> None:
    rows = two_seasons()
    feats = compute_features(rows)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    first_season = {m.home_team for m in rows if m.season == "2022/23"}
    opening = [m for m in rows if m.season == "2023/24"][:10]
    for m in opening:
        f = feats[m.match_id]
        assert f[col["promoted_home"]] == (0.0 if m.home_team in first_season else 1.0)
        assert f[col["promoted_away"]] == (0.0 if m.away_team in first_season else 1.0)
    promoted = [m for m in opening if m.home_team not in first_season]
    assert promoted, "2023/24 had promoted sides"
    stayed = [feats[m.match_id][col["elo_home"]] for m in opening if m.home_team in first_season]
    assert all(feats[m.match_id][col["elo_home"]] < np.mean(stayed) for m in promoted)


def test_poisson_probabilities_are_consistent() -> None:
    rows = season_rows()
    feats = compute_features(rows)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    for prefix in ("xg", "xsot", "xmix"):
        for m in rows[-20:]:
            p = np.exp([feats[m.match_id][col[f"{prefix}_logp_{o}"]] for o in ("home", "draw", "away")])
            assert p.sum() == pytest.approx(1.0, abs=1e-4)
    last = rows[-1]
    f = feats[last.match_id]
    favourite = f[col["xg_home"]] > f[col["xg_away"]]
    assert (f[col["xg_logp_home"]] > f[col["xg_logp_away"]]) == favourite
    ph, pd, pa = outcome_probabilities(1.5, 1.5, 0.0)
    assert ph == pytest.approx(pa) and ph + pd + pa == pytest.approx(1.0)
    assert outcome_probabilities(1.2, 1.0, -0.1)[1] > outcome_probabilities(1.2, 1.0, 0.0)[1]  # rho < 0: more draws


def test_matches_without_crowds_are_flagged_and_expect_less_home_advantage() -> None:
    rows = season_rows(season="season-2021.csv")
    feats = compute_features(rows)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert all(feats[m.match_id][col["no_crowd"]] == float(without_crowd(m.league, m.date)) for m in rows)
    assert without_crowd("premier-league", date(2021, 1, 2)) and not without_crowd("premier-league", date(2021, 8, 14))
    # The same state, the same pairing: without crowds the home side is expected to score less.
    state = FeatureState()
    for m in rows[:200]:
        state.update(m)
    m = rows[200]
    with_crowd = replace(m, date=date(2021, 8, 14), season="2020/21")
    closed = state.features(m)[col["xg_home"]]
    assert without_crowd(m.league, m.date) and closed < state.features(with_crowd)[col["xg_home"]]
