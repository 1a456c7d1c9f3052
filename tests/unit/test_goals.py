"""The scoreline grid and its markets: consistency with the 1X2, sums over the grid, hand-computed lines, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from matchcast.model.goals import (
    AH_LINES,
    MARKET_COLUMNS,
    OU_LINES,
    SIDE,
    GoalsModel,
    conform,
    dixon_coles_grid,
    fit_goals,
    fit_rho,
    goal_summary,
    market_table,
    markets_json,
    poisson_pmf,
    region_sums,
    served_probabilities,
    top_scores,
)


def hand_grid() -> np.ndarray:
    """0-0 0.30, 1-1 0.25, 1-0 0.20, 0-2 0.15, 2-0 0.10."""
    g = np.zeros((1, SIDE, SIDE))
    g[0, 0, 0], g[0, 1, 1], g[0, 1, 0], g[0, 0, 2], g[0, 2, 0] = 0.30, 0.25, 0.20, 0.15, 0.10
    return g


def random_grids(n: int = 50, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    served = served_probabilities(rng.dirichlet([3, 2, 2], n))
    lam_home, lam_away, rho = rng.uniform(0.2, 3.5, n), rng.uniform(0.2, 3.0, n), rng.uniform(-0.2, 0.1, n)
    grid = conform(dixon_coles_grid(lam_home, lam_away, rho), served)
    return served, grid


def test_hand_computed_markets() -> None:
    entry = markets_json(hand_grid())[0]
    m = entry["markets"]
    assert entry["expected_goals"] == pytest.approx({"home": 0.65, "away": 0.55})
    ou = {o["line"]: (o["over"], o["under"]) for o in m["over_under"]}
    assert ou[0.5] == pytest.approx((0.70, 0.30))
    assert ou[1.5] == pytest.approx((0.50, 0.50))
    assert ou[2.5] == pytest.approx((0.0, 1.0)) and ou[4.5] == pytest.approx((0.0, 1.0))
    assert m["btts"] == pytest.approx({"yes": 0.25, "no": 0.75})
    assert m["double_chance"] == pytest.approx({"home_draw": 0.85, "home_away": 0.45, "draw_away": 0.70})
    assert m["draw_no_bet"] == pytest.approx({"home": 0.30 / 0.45, "away": 0.15 / 0.45})
    # Goal difference: +2 0.10, +1 0.20, 0 0.55, -2 0.15. (win, push, lose) of the home side per line:
    expected = {
        -2.5: (0.0, 0.0, 1.0),
        -2.0: (0.0, 0.10, 0.90),
        -1.5: (0.10, 0.0, 0.90),
        -1.0: (0.10, 0.20, 0.70),
        -0.5: (0.30, 0.0, 0.70),
        0.0: (0.30, 0.55, 0.15),
        0.5: (0.85, 0.0, 0.15),
        1.0: (0.85, 0.0, 0.15),
        1.5: (0.85, 0.0, 0.15),
        2.0: (0.85, 0.15, 0.0),
        2.5: (1.0, 0.0, 0.0),
    }
    got = {a["line"]: (a["win"], a["push"], a["lose"]) for a in m["asian_handicap"]}
    assert list(got) == list(AH_LINES)
    for line, want in expected.items():
        assert got[line] == pytest.approx(want), line
    scores = [(s["home_goals"], s["away_goals"], s["probability"]) for s in m["top_scores"]]
    assert scores == [(0, 0, 0.30), (1, 1, 0.25), (1, 0, 0.20), (0, 2, 0.15), (2, 0, 0.10)]


def test_every_market_is_its_sum_over_the_grid() -> None:
    _, grids = random_grids()
    table = market_table(grids)
    col = {name: table[:, k] for k, name in enumerate(MARKET_COLUMNS)}
    for n, g in enumerate(grids):
        cells = [(i, j, g[i, j]) for i in range(SIDE) for j in range(SIDE)]

        def total(pred: object, cells: list = cells) -> float:
            return sum(p for i, j, p in cells if pred(i, j))  # type: ignore[operator]

        h, d, a = total(lambda i, j: i > j), total(lambda i, j: i == j), total(lambda i, j: i < j)
        assert col["xg_home"][n] == pytest.approx(sum(i * p for i, _, p in cells), abs=1e-12)
        assert col["xg_away"][n] == pytest.approx(sum(j * p for _, j, p in cells), abs=1e-12)
        for line in OU_LINES:
            assert col[f"over_{line}"][n] == pytest.approx(total(lambda i, j, line=line: i + j > line), abs=1e-12)
            assert col[f"under_{line}"][n] == pytest.approx(total(lambda i, j, line=line: i + j < line), abs=1e-12)
        assert col["btts_yes"][n] == pytest.approx(total(lambda i, j: i > 0 and j > 0), abs=1e-12)
        assert col["btts_no"][n] == pytest.approx(total(lambda i, j: i == 0 or j == 0), abs=1e-12)
        assert (col["dc_home_draw"][n], col["dc_home_away"][n], col["dc_draw_away"][n]) == pytest.approx(
            (h + d, h + a, d + a), abs=1e-12
        )
        assert (col["dnb_home"][n], col["dnb_away"][n]) == pytest.approx((h / (h + a), a / (h + a)), abs=1e-12)
        for line in AH_LINES:
            win = total(lambda i, j, line=line: i - j + line > 0)
            push = total(lambda i, j, line=line: i - j + line == 0)
            lose = total(lambda i, j, line=line: i - j + line < 0)
            got = (col[f"ah_win_{line}"][n], col[f"ah_push_{line}"][n], col[f"ah_lose_{line}"][n])
            assert got == pytest.approx((win, push, lose), abs=1e-12)
            if line != int(line):
                assert got[1] == 0.0  # only whole-goal lines can push


def test_bounds_and_each_market_sums_to_one() -> None:
    _, grids = random_grids(200, seed=3)
    entries = markets_json(grids)
    for e in entries:
        m = e["markets"]
        values = [v for o in m["over_under"] for v in (o["over"], o["under"])]
        values += [*m["btts"].values(), *m["double_chance"].values(), *m["draw_no_bet"].values()]
        values += [v for a in m["asian_handicap"] for v in (a["win"], a["push"], a["lose"])]
        values += [s["probability"] for s in m["top_scores"]]
        assert all(0.0 <= v <= 1.0 for v in values)
        for o in m["over_under"]:
            assert o["over"] + o["under"] == pytest.approx(1.0, abs=1e-12)
        assert sum(m["btts"].values()) == pytest.approx(1.0, abs=1e-12)
        assert sum(m["draw_no_bet"].values()) == pytest.approx(1.0, abs=1e-12)
        assert sum(m["double_chance"].values()) == pytest.approx(2.0, abs=1e-12)  # each outcome counted twice
        for a in m["asian_handicap"]:
            assert a["win"] + a["push"] + a["lose"] == pytest.approx(1.0, abs=1e-12)
        probs = [s["probability"] for s in m["top_scores"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 5
    assert (grids >= 0).all() and np.allclose(grids.sum(axis=(1, 2)), 1.0, atol=1e-12)


def test_grid_agrees_with_the_1x2_exactly() -> None:
    served, grids = random_grids(500, seed=5)
    assert np.abs(region_sums(grids) - served).max() < 1e-12
    # even for extreme forecasts and rates
    probs = served_probabilities(np.array([[0.98, 0.015, 0.005], [1e-6, 1e-6, 1 - 2e-6], [0.2, 0.6, 0.2]]))
    g = conform(dixon_coles_grid(np.array([0.05, 8.0, 0.05]), np.array([8.0, 0.05, 0.05]), -0.3), probs)
    assert np.abs(region_sums(g) - probs).max() < 1e-12
    assert np.isfinite(g).all() and (g >= 0).all()


def test_top_scores_are_the_largest_cells() -> None:
    _, grids = random_grids(100, seed=7)
    idx, probs = top_scores(grids)
    flat = grids.reshape(len(grids), -1)
    assert np.allclose(probs, -np.sort(-flat, axis=1)[:, :5])
    assert np.array_equal(np.take_along_axis(flat, idx, axis=1), probs)


def test_grid_on_request_only() -> None:
    _, grids = random_grids(3)
    entries = markets_json(grids, with_grid=[False, True, False])
    assert "grid" not in entries[0] and "grid" not in entries[2]
    assert np.array_equal(np.array(entries[1]["grid"]), grids[1])


def test_dixon_coles_grid_matches_its_definition() -> None:
    lh, la, rho = np.array([1.4]), np.array([1.1]), -0.1
    g = dixon_coles_grid(lh, la, rho)[0]
    raw = np.outer(poisson_pmf(lh)[0], poisson_pmf(la)[0])
    raw[0, 0] *= 1 - 1.4 * 1.1 * rho
    raw[0, 1] *= 1 + 1.4 * rho
    raw[1, 0] *= 1 + 1.1 * rho
    raw[1, 1] *= 1 - rho
    assert np.allclose(g, raw / raw.sum())


def test_fit_rho_recovers_the_simulated_correction() -> None:
    rng = np.random.default_rng(11)
    n = 40_000
    lam = np.column_stack([rng.uniform(0.8, 2.2, n), rng.uniform(0.6, 1.8, n)])
    grids = dixon_coles_grid(lam[:, 0], lam[:, 1], -0.12).reshape(n, -1)
    cells = (grids.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    assert fit_rho(lam, cells // SIDE, cells % SIDE) == pytest.approx(-0.12, abs=0.04)


def test_goals_model_round_trip_and_refusals() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2000, 4))
    hg = rng.poisson(np.exp(0.3 + 0.2 * z[:, 0]))
    ag = rng.poisson(np.exp(0.1 - 0.2 * z[:, 0]))
    model = fit_goals(z, hg, ag, alpha=1e-3)
    assert model.coef is not None and model.coef[0, 0] > 0.1 and model.coef[1, 0] < -0.1
    again = GoalsModel.from_dict(model.to_dict(), 4)
    assert np.array_equal(again.rates(z, z), model.rates(z, z))
    with pytest.raises(ValueError):
        GoalsModel.from_dict(model.to_dict(), 5)
    with pytest.raises(ValueError):
        GoalsModel.from_dict({**model.to_dict(), "format": 99}, 4)


def test_fallback_rates_are_the_features_goal_expectations() -> None:
    names = ("a", "xmix_home", "b", "xmix_away")
    x = np.array([[9.0, 1.7, 9.0, 0.9]])
    assert GoalsModel.from_features(names).rates(x, x).tolist() == [[1.7, 0.9]]


def test_goal_summary() -> None:
    s = goal_summary(hand_grid(), np.array([1]), np.array([1]))[0]
    assert s[0] == pytest.approx(0.0) and s[1] == pytest.approx(0.25) and s[2] == pytest.approx(0.25)
    assert s[3:].tolist() == pytest.approx([0.30, 0.20, 0.50, 0, 0, 0, 0])
    assert goal_summary(hand_grid(), np.array([12]), np.array([0]))[0, 2] == 0.0  # beyond the grid
