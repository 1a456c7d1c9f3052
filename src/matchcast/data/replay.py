"""A season as it happened: the bundled files of one season, rendered as a feed would publish them on a given day.

On day ``D`` a league's file holds every match of the season: those played before ``D`` with their results (and
statistics, as the season files have them), those from ``D`` on as fixtures with empty scores, in the layout of
football-data.co.uk's season files with a ``Div`` column. Rendering is deterministic, so the same day gives the
same bytes (and the same ETag) and a day that adds no result changes nothing a conditional GET would fetch.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from matchcast.data.ingest import DIVISIONS, bundled_files

LEAGUE_DIV = {league: div for div, league in DIVISIONS.items()}
# Everything a fixture does not have yet: the score, the result and the match statistics.
_RESULT_COLUMNS = frozenset(
    {"FTHG", "FTAG", "FTR", "HTHG", "HTAG", "HTR", "Referee"}
    | {"HS", "AS", "HST", "AST", "HF", "AF", "HC", "AC", "HY", "AY", "HR", "AR"}
)


@dataclass(frozen=True)
class LeagueSeason:
    """One league's season file: its header (with ``Div`` first) and rows sorted by date."""

    league: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def dates(self) -> list[date]:
        """Every match day of this league's season, in order."""
        return sorted({date.fromisoformat(r[1]) for r in self.rows})

    def render(self, day: date) -> bytes:
        """The file as published on ``day``: results before it, fixtures from it on."""
        blank = [i for i, h in enumerate(self.header) if h in _RESULT_COLUMNS]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        for row in self.rows:
            if date.fromisoformat(row[1]) >= day:
                cells = list(row)
                for i in blank:
                    cells[i] = ""
                writer.writerow(cells)
            else:
                writer.writerow(row)
        return out.getvalue().encode()

    def played_before(self, day: date) -> int:
        """How many results the file holds on ``day``."""
        return sum(1 for r in self.rows if date.fromisoformat(r[1]) < day)


def etag_of(body: bytes) -> str:
    """A strong ETag of a rendered file."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def season_files(season: str, files: list[Path] | None = None) -> dict[str, LeagueSeason]:
    """The bundled (or given) files of ``season`` ('2025/26'), one per league, keyed by league."""
    suffix = f"season-{season[2:4]}{season[5:7]}.csv"
    out: dict[str, LeagueSeason] = {}
    for path in files if files is not None else bundled_files():
        league = path.parent.name
        if path.name != suffix or league not in LEAGUE_DIV:
            continue
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader)]
            rows = [r + [""] * (len(header) - len(r)) for r in reader if r and any(c.strip() for c in r)]
        if "Div" in header:
            raise ValueError(f"{path} already has a Div column")
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        out[league] = LeagueSeason(
            league,
            ("Div", *header),
            tuple((LEAGUE_DIV[league], *r[: len(header)]) for r in rows),
        )
    if not out:
        raise ValueError(f"no bundled file of season {season}")
    return out
