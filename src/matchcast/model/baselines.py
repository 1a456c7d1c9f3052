"""The league-frequency baseline: each league's home/draw/away shares over every earlier match.

One definition for the walk-forward evaluation (``evaluate``) and the live scores (``service.live``): the shares
of the league's finished matches dated before the forecast day, starting from one pseudo-match of each outcome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date

import numpy as np

from matchcast.model.scoring import OUTCOMES, FloatArray


class LeagueFrequencies:
    """Each league's outcome counts over the matches added so far, one pseudo-match of each outcome to start."""

    def __init__(self) -> None:
        self.counts: dict[str, FloatArray] = defaultdict(lambda: np.ones(3))

    def add(self, league: str, outcome: int, n: int = 1) -> None:
        """Count ``n`` finished matches of ``league`` that ended in ``outcome`` (0 home, 1 draw, 2 away)."""
        self.counts[league][outcome] += n

    def probs(self, league: str) -> FloatArray:
        """The league's home/draw/away shares."""
        c = self.counts[league]
        out: FloatArray = c / c.sum()
        return out


def frequency_forecasts(
    history: Sequence[tuple[str, date, str, int]], targets: Sequence[tuple[str, date]]
) -> FloatArray:
    """The baseline's forecast of each target (league, date) from ``history``: (league, date, result 'H'/'D'/'A',
    count) rows of finished matches, oldest first; only those dated before the target's day count."""
    out: FloatArray = np.empty((len(targets), 3))
    freq = LeagueFrequencies()
    order = sorted(range(len(targets)), key=lambda i: targets[i][1])
    h = 0
    for i in order:
        league, day = targets[i]
        while h < len(history) and history[h][1] < day:
            lg, _, result, n = history[h]
            freq.add(lg, OUTCOMES.index(result), n)
            h += 1
        out[i] = freq.probs(league)
    return out
