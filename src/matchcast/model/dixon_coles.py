"""The Dixon-Coles baseline of the evaluation: penaltyblog's model per league, refit weekly, and its score grids.

penaltyblog is an optional dependency (``pip install 'matchcast[eval]'``), imported here only, never on the
serving path. Its grid refuses some fits (``ValueError: goal_matrix contains negative probabilities``, when a
fitted ``rho`` makes a low-score cell negative for a pair): such a match gets the grid of the same rates with
``rho`` clipped to where every cell is non-negative, and is counted (``failures``); one pair never ends the run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, Protocol

import numpy as np

from matchcast.data.features import MatchLike
from matchcast.errors import InvalidInput
from matchcast.model.goals import SIDE
from matchcast.model.scoring import FloatArray

DC_MAX_GOALS = 15  # penaltyblog's default grid, from which its 1X2 comes (unchanged)


class DixonColesConfig(Protocol):
    """The knobs the baseline reads (``EvalConfig`` has them)."""

    @property
    def dc_xi(self) -> float: ...
    @property
    def dc_window_days(self) -> int: ...
    @property
    def dc_refit_days(self) -> int: ...
    @property
    def dc_min_matches(self) -> int: ...


class DixonColes:
    """Per-league penaltyblog Dixon-Coles models, refit weekly on a two-year time-decayed window."""

    def __init__(self, history: Sequence[MatchLike], config: DixonColesConfig) -> None:
        try:
            import penaltyblog as pb
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InvalidInput("the Dixon-Coles baseline needs penaltyblog: pip install 'matchcast[eval]'") from exc
        self.pb = pb
        self.config = config
        self.by_league: dict[str, list[MatchLike]] = defaultdict(list)
        for m in history:
            self.by_league[m.league].append(m)
        self.fitted: dict[str, tuple[date, Any]] = {}
        self.fits = 0
        self.fallbacks = 0
        self.failures = 0

    def _fit(self, league: str, day: date) -> Any:
        cfg = self.config
        lo = day - timedelta(days=cfg.dc_window_days)
        train = [m for m in self.by_league[league] if lo <= m.date < day]
        if len(train) < cfg.dc_min_matches:
            return None
        weights = self.pb.models.dixon_coles_weights([m.date for m in train], cfg.dc_xi, base_date=day)
        model = self.pb.models.DixonColesGoalModel(
            [m.home_goals for m in train],
            [m.away_goals for m in train],
            [m.home_team for m in train],
            [m.away_team for m in train],
            weights,
        )
        try:
            model.fit()
        except ValueError:  # the optimiser did not converge: keep the previous fit
            return self.fitted.get(league, (day, None))[1]
        self.fits += 1
        return model

    def _clipped_grid(self, lam_h: float, lam_a: float, rho: float) -> Any:
        rho = float(np.clip(rho, max(-1 / lam_h, -1 / lam_a), min(1.0, 1 / (lam_h * lam_a))))
        return self.pb.models.create_dixon_coles_grid(lam_h, lam_a, rho)

    def predict(self, league: str, day: date, pairs: Sequence[tuple[str, str]]) -> tuple[FloatArray, FloatArray] | None:
        """H/D/A probabilities (n, 3) and score grids (n, 11, 11) of ``pairs`` on ``day``; None before any fit."""
        last = self.fitted.get(league)
        if last is None or (day - last[0]).days >= self.config.dc_refit_days:
            self.fitted[league] = (day, self._fit(league, day))
        model = self.fitted[league][1]
        if model is None:
            return None
        params = model.get_params()
        teams = set(model.teams)
        # A team absent from the window (promoted) gets the mean strength of the three weakest teams.
        strength = sorted(teams, key=lambda t: params[f"attack_{t}"] - params[f"defence_{t}"])[:3]
        weak_att = float(np.mean([params[f"attack_{t}"] for t in strength]))
        weak_def = float(np.mean([params[f"defence_{t}"] for t in strength]))
        out = np.empty((len(pairs), 3))
        grids = np.empty((len(pairs), SIDE, SIDE))
        for i, (home, away) in enumerate(pairs):
            ah, dh = (params[f"attack_{home}"], params[f"defence_{home}"]) if home in teams else (weak_att, weak_def)
            aa, da = (params[f"attack_{away}"], params[f"defence_{away}"]) if away in teams else (weak_att, weak_def)
            lam_h = math.exp(params["home_advantage"] + ah + da)
            lam_a = math.exp(aa + dh)
            if home in teams and away in teams:
                try:
                    grid = model.predict(home, away, max_goals=DC_MAX_GOALS)
                except ValueError:  # a negative low-score cell for this pair: the clipped grid instead
                    self.failures += 1
                    grid = self._clipped_grid(lam_h, lam_a, params["rho"])
            else:
                self.fallbacks += 1
                grid = self._clipped_grid(lam_h, lam_a, params["rho"])
            out[i] = grid.home_draw_away
            cells = np.clip(np.asarray(grid.grid, dtype=np.float64)[:SIDE, :SIDE], 0.0, None)
            grids[i] = cells / cells.sum()
        out = np.clip(out, 1e-9, None)
        result: FloatArray = out / out.sum(axis=1, keepdims=True)
        return result, grids
