"""Team names across sources: the alias table applied at parse, and the screen for names a league has never seen.

Sources spell teams their own way ("Manchester United" where football-data.co.uk, and so the store, has
"Man United"). Aliases map a source's name to the store's: the bundled table below, then the user's file
(``MATCHCAST_HOME/team_aliases.json``, ``{"source name": "store name"}``), which wins. Names are matched without
regard to case or surrounding spaces.

The screen (``screen``) runs on every ingest, against the store as it was before it. A name its league has never
had is, with ``nearest`` its closest known names of that league (``difflib``, ratio >= ``CUTOFF``):

- **promoted** (ingested as a new team) when it has no close known name *and* the season of its first match
  in the file is not under way in the store: no result of that league in that season yet (promoted teams arrive
  with a new season's fixtures or first results);
- **held back** otherwise: its rows are not ingested (the rest of the file is), and it is flagged, until an alias
  maps it (to a known name, or to itself to declare a new team).

A league with no team in the store yet (a new league, or a first ingest) is not screened.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matchcast.errors import InvalidInput

CUTOFF = 0.6
NEAREST = 3

# Common names of other sources (club names in full, English forms) -> football-data.co.uk's, as the store has them.
BUNDLED_ALIASES: dict[str, str] = {
    "Manchester United": "Man United",
    "Manchester Utd": "Man United",
    "Man Utd": "Man United",
    "Manchester City": "Man City",
    "Wolverhampton Wanderers": "Wolves",
    "Wolverhampton": "Wolves",
    "Tottenham Hotspur": "Tottenham",
    "Spurs": "Tottenham",
    "Newcastle United": "Newcastle",
    "West Ham United": "West Ham",
    "Brighton & Hove Albion": "Brighton",
    "Brighton and Hove Albion": "Brighton",
    "Nottingham Forest": "Nott'm Forest",
    "Leicester City": "Leicester",
    "Leeds United": "Leeds",
    "AFC Bournemouth": "Bournemouth",
    "Ipswich Town": "Ipswich",
    "Luton Town": "Luton",
    "Norwich City": "Norwich",
    "Cardiff City": "Cardiff",
    "Swansea City": "Swansea",
    "Stoke City": "Stoke",
    "Hull City": "Hull",
    "West Bromwich Albion": "West Brom",
    "Huddersfield Town": "Huddersfield",
    "Queens Park Rangers": "QPR",
    "Athletic Bilbao": "Ath Bilbao",
    "Athletic Club": "Ath Bilbao",
    "Atletico Madrid": "Ath Madrid",
    "Atlético Madrid": "Ath Madrid",
    "Real Betis": "Betis",
    "Celta Vigo": "Celta",
    "RCD Espanyol": "Espanol",
    "Espanyol": "Espanol",
    "Real Sociedad": "Sociedad",
    "Rayo Vallecano": "Vallecano",
    "Deportivo Alaves": "Alaves",
    "Deportivo Alavés": "Alaves",
    "Inter Milan": "Inter",
    "Internazionale": "Inter",
    "AC Milan": "Milan",
    "AS Roma": "Roma",
    "SSC Napoli": "Napoli",
    "Hellas Verona": "Verona",
    "FC Bayern München": "Bayern Munich",
    "Borussia Dortmund": "Dortmund",
    "Borussia Monchengladbach": "M'gladbach",
    "Borussia Mönchengladbach": "M'gladbach",
    "Bayer Leverkusen": "Leverkusen",
    "Eintracht Frankfurt": "Ein Frankfurt",
    "VfB Stuttgart": "Stuttgart",
    "VfL Wolfsburg": "Wolfsburg",
    "1. FC Köln": "FC Koln",
    "FC Cologne": "FC Koln",
    "Paris Saint-Germain": "Paris SG",
    "Paris Saint Germain": "Paris SG",
    "PSG": "Paris SG",
    "Olympique Marseille": "Marseille",
    "Olympique de Marseille": "Marseille",
    "Olympique Lyonnais": "Lyon",
    "AS Monaco": "Monaco",
    "Stade Rennais": "Rennes",
    "AS Saint-Etienne": "St Etienne",
    "Saint-Etienne": "St Etienne",
}


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


class Aliases:
    """Source name -> store name, case and spacing ignored; a name mapped to itself is declared a new team."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = {_norm(k): v.strip() for k, v in table.items() if _norm(k) != _norm(v)}
        self.new_teams = {_norm(k) for k, v in table.items() if _norm(k) == _norm(v)}

    def __call__(self, name: str) -> str:
        """The store's name for ``name`` (``name`` itself when no alias maps it)."""
        return self.table.get(_norm(name), name)

    def declared(self, name: str) -> bool:
        """Whether the user declared ``name`` a new team (an alias from it to itself)."""
        return _norm(name) in self.new_teams


def load_aliases(path: Path | None) -> Aliases:
    """The bundled aliases, overridden by the user's JSON file at ``path`` when it exists."""
    table = dict(BUNDLED_ALIASES)
    if path is not None and path.exists():
        try:
            user = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: not a JSON object of team aliases ({exc})") from exc
        if not isinstance(user, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in user.items()):
            raise InvalidInput(f'{path}: team aliases are a JSON object {{"source name": "store name"}}')
        table.update(user)
    return Aliases(table)


@dataclass(frozen=True)
class UnknownTeam:
    """A name its league had never had, what was decided, and the known names closest to it."""

    league: str
    team: str
    season: str
    decision: str  # "promoted" (ingested as a new team) or "held_back" (its rows not ingested)
    nearest: list[str]
    matches: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return asdict(self)


def nearest(name: str, known: Iterable[str]) -> list[str]:
    """The known names closest to ``name`` (at most ``NEAREST``, ratio >= ``CUTOFF``), closest first."""
    return difflib.get_close_matches(name, list(known), n=NEAREST, cutoff=CUTOFF)


def screen(
    rows: list[Any],
    known: Mapping[str, set[str]],
    seasons: Mapping[str, set[str]],  # per league, the seasons under way (with a result) in the store
    aliases: Aliases | None = None,
) -> tuple[list[Any], list[UnknownTeam]]:
    """Rows to ingest and the unknown names found (see the module's rule); ``rows`` are ``ParsedMatch``-like."""
    first: dict[tuple[str, str], Any] = {}
    count: dict[tuple[str, str], int] = {}
    for r in rows:
        teams = known.get(r.league)
        if not teams:
            continue
        for team in (r.home_team, r.away_team):
            if team in teams or (aliases is not None and aliases.declared(team)):
                continue
            k = (r.league, team)
            count[k] = count.get(k, 0) + 1
            if k not in first or r.date < first[k].date:
                first[k] = r
    flagged: list[UnknownTeam] = []
    held: set[tuple[str, str]] = set()
    for (league, team), r in sorted(first.items()):
        close = nearest(team, known[league])
        promoted = not close and r.season not in seasons.get(league, set())
        flagged.append(
            UnknownTeam(league, team, r.season, "promoted" if promoted else "held_back", close, count[(league, team)])
        )
        if not promoted:
            held.add((league, team))
    if not held:
        return rows, flagged
    kept = [r for r in rows if (r.league, r.home_team) not in held and (r.league, r.away_team) not in held]
    return kept, flagged
