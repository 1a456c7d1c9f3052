"""Loading football-data.co.uk CSV files (results and fixtures) into the match store.

Every file is parsed and checked in full before anything is written, and all of it is written in one
transaction: a malformed file is refused with its file, line and column, and nothing is half-loaded.
Re-ingesting a file changes nothing (rows are keyed by league, date and teams). Team names go through the alias
table and the screen for names a league has never seen (``data/teams.py``); a changed past score is applied and
reported (``IngestReport.rewritten``) and logged.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from matchcast.data.store import STAT_COLUMNS, Match, MatchStore
from matchcast.data.teams import Aliases, screen
from matchcast.errors import IngestError

log = logging.getLogger(__name__)

DIVISIONS = {
    "E0": "premier-league",
    "SP1": "la-liga",
    "I1": "serie-a",
    "D1": "bundesliga",
    "F1": "ligue-1",
}
KNOWN_LEAGUES = frozenset(DIVISIONS.values())
_HOME_ALIASES = ("HomeTeam", "Home", "HT")
_AWAY_ALIASES = ("AwayTeam", "Away", "AT")
_SEASON_FILE = re.compile(r"season-(\d{2})(\d{2})\.csv$")
_MAX_NAME = 64


@dataclass(frozen=True)
class ParsedMatch:
    """One row of a source file, checked."""

    league: str
    season: str
    date: date
    home_team: str
    away_team: str
    home_goals: int | None
    away_goals: int | None
    result: str | None
    referee: str | None
    stats: dict[str, int] | None
    source: str

    @property
    def key(self) -> tuple[str, dt.date, str, str]:
        """The natural key that makes re-ingestion idempotent."""
        return (self.league, self.date, self.home_team, self.away_team)

    def values(self) -> tuple[Any, ...]:
        """The stored values compared when a match is ingested again."""
        return (self.season, self.home_goals, self.away_goals, self.result, self.referee, self.stats)


@dataclass
class IngestReport:
    """What an ingestion did."""

    files: list[str] = field(default_factory=list)
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    held_back: int = 0
    rewritten: list[dict[str, Any]] = field(default_factory=list)  # past results whose score changed
    unknown_teams: list[dict[str, Any]] = field(default_factory=list)  # ``teams.UnknownTeam`` as plain data


def bundled_files() -> list[Path]:
    """The vendored football-datasets CSV files, league by league, season by season."""
    root = Path(str(resources.files("matchcast.data") / "bundled"))
    return sorted(root.glob("*/season-*.csv"))


def _parse_date(text: str) -> date:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d/%m/%y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date: {text!r} (expected YYYY-MM-DD or DD/MM/YYYY)")


def season_of(d: date) -> str:
    """Season label of a date, seasons starting in July: 2025-08-15 -> '2025/26'."""
    start = d.year if d.month >= 7 else d.year - 1
    return f"{start}/{(start + 1) % 100:02d}"


def _season_from_name(path: Path) -> str | None:
    m = _SEASON_FILE.search(path.name)
    if not m:
        return None
    yy = int(m.group(1))
    start = 1900 + yy if yy >= 90 else 2000 + yy
    return f"{start}/{m.group(2)}"


def _int_or_none(text: str, *, low: int = 0, high: int = 999) -> int | None:
    text = text.strip()
    if text == "":
        return None
    value = int(float(text)) if re.fullmatch(r"\d+\.0+", text) else int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}..{high}")
    return value


def parse_file(
    path: Path, *, league: str | None = None, as_of: date | None = None, aliases: Aliases | None = None
) -> tuple[list[ParsedMatch], int]:
    """Parse and check one file: (matches, how many results were held back by ``as_of``)."""
    name = str(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raw = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise IngestError(name, 0, None, f"cannot read the file: {exc.strerror}") from exc
    folder_league = path.parent.name if path.parent.name in KNOWN_LEAGUES else None
    return parse_text(
        raw, name, league=league or folder_league, as_of=as_of, season=_season_from_name(path), aliases=aliases
    )


def decode(content: bytes) -> str:
    """A file's text: UTF-8 (with or without its byte order mark), else Latin-1 as football-data.co.uk's older files."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return content.decode("latin-1")


def parse_text(
    raw: str,
    name: str,
    *,
    league: str | None = None,
    as_of: date | None = None,
    season: str | None = None,
    aliases: Aliases | None = None,
) -> tuple[list[ParsedMatch], int]:
    """Parse and check a file's text (``name`` in errors and as the rows' source); ``season`` from its name."""
    if raw and not raw.endswith(("\n", "\r")):
        last = raw.splitlines()[-1]
        header_fields = len(next(csv.reader([raw.splitlines()[0]]), []))
        if len(next(csv.reader([last]), [])) < header_fields:  # a last line cut short: the file is truncated
            raise IngestError(name, raw.count("\n") + 1, None, "the file ends in the middle of a line (truncated)")
    reader = csv.reader(raw.splitlines())
    header = next(reader, None)
    if not header:
        raise IngestError(name, 1, None, "the file is empty (no header line)")
    header = [h.strip() for h in header]
    cols = {h: i for i, h in enumerate(header) if h}

    def find(aliases: Sequence[str]) -> str | None:
        return next((a for a in aliases if a in cols), None)

    home_col, away_col = find(_HOME_ALIASES), find(_AWAY_ALIASES)
    for needed, got in (("Date", "Date" if "Date" in cols else None), ("HomeTeam", home_col), ("AwayTeam", away_col)):
        if got is None:
            raise IngestError(name, 1, needed, "required column is missing from the header")
    assert home_col and away_col
    source = Path(name).name
    out: list[ParsedMatch] = []
    held = 0
    seen: dict[tuple[str, date, str, str], int] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) > len(header):
            raise IngestError(name, lineno, None, f"{len(row)} fields but the header has {len(header)}")
        row = row + [""] * (len(header) - len(row))

        def cell(col: str, _row: list[str] = row) -> str:
            return _row[cols[col]].strip() if col in cols else ""

        current = "Date"
        try:
            d = _parse_date(cell("Date"))
            current = home_col
            home, away = cell(home_col), cell(away_col)
            if aliases is not None:
                home, away = aliases(home), aliases(away)
            for col, team in ((home_col, home), (away_col, away)):
                current = col
                if not team:
                    raise ValueError("team name is empty")
                if len(team) > _MAX_NAME:
                    raise ValueError(f"team name longer than {_MAX_NAME} characters")
            current = away_col
            if home == away:
                raise ValueError("home and away team are the same")
            current = "Div"
            div = cell("Div")
            lg = DIVISIONS.get(div, div.lower() if div else None) or league
            if not lg:
                raise ValueError("cannot tell the league: no Div column; pass a league")
            current = "FTHG"
            hg = _int_or_none(cell("FTHG"), high=30)
            current = "FTAG"
            ag = _int_or_none(cell("FTAG"), high=30)
            current = "FTHG"
            if (hg is None) != (ag is None):
                raise ValueError("one score is given and the other is empty")
            current = "FTR"
            ftr = cell("FTR") or None
            res = None if hg is None or ag is None else ("H" if hg > ag else "A" if ag > hg else "D")
            if ftr is not None and ftr not in ("H", "D", "A"):
                raise ValueError(f"FTR must be H, D or A, not {ftr!r}")
            if ftr is not None and res is not None and ftr != res:
                raise ValueError(f"FTR {ftr} disagrees with the score {hg}-{ag}")
            stats: dict[str, int] = {}
            for col in STAT_COLUMNS:
                current = col
                v = _int_or_none(cell(col), high=200)
                if v is not None:
                    stats[col] = v
            current = "Referee"
            referee = cell("Referee")[:_MAX_NAME] or None
        except ValueError as exc:
            raise IngestError(name, lineno, current, str(exc)) from exc
        key = (lg, d, home, away)
        if key in seen:
            raise IngestError(name, lineno, None, f"duplicate of the match on line {seen[key]}")
        seen[key] = lineno
        row_season = season or season_of(d)
        if as_of is not None and d >= as_of and res is not None:
            held += 1
            hg = ag = None
            res = None
            stats = {}
            referee = None
        out.append(ParsedMatch(lg, row_season, d, home, away, hg, ag, res, referee, stats or None, source))
    return out, held


def ingest(
    store: MatchStore,
    paths: Iterable[Path],
    *,
    league: str | None = None,
    as_of: date | None = None,
    aliases: Aliases | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Check every file, then upsert all rows in one transaction; ``progress(step, done, total)`` is told."""
    report = IngestReport()
    parsed: list[ParsedMatch] = []
    paths = list(paths)
    for n, path in enumerate(paths, 1):
        rows, held = parse_file(Path(path), league=league, as_of=as_of, aliases=aliases)
        if progress:
            progress("reading files", n, len(paths))
        report.files.append(str(path))
        report.held_back += held
        parsed.extend(rows)
    return save(store, parsed, report, aliases=aliases, progress=progress)


def save(
    store: MatchStore,
    rows: Iterable[ParsedMatch],
    report: IngestReport,
    *,
    aliases: Aliases | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Upsert checked rows (the last of each match wins) in one transaction, screening unknown team names."""
    parsed = {r.key: r for r in rows}
    if progress:
        progress("saving matches", 0, 1)
    with store.session() as s:
        existing = {
            (lg, d, h, a): (mid, (season, hg, ag, res, ref, stats))
            for mid, lg, d, h, a, season, hg, ag, res, ref, stats in s.execute(
                select(
                    Match.match_id,
                    Match.league,
                    Match.date,
                    Match.home_team,
                    Match.away_team,
                    Match.season,
                    Match.home_goals,
                    Match.away_goals,
                    Match.result,
                    Match.referee,
                    Match.stats,
                )
            )
        }
        known: dict[str, set[str]] = {}
        seasons: dict[str, set[str]] = {}
        for (lg, _, h, a), (_, values) in existing.items():
            known.setdefault(lg, set()).update((h, a))
            if values[1] is not None:  # a season is under way once it has a result
                seasons.setdefault(lg, set()).add(values[0])
        kept, unknown = screen(list(parsed.values()), known, seasons, aliases)
        report.unknown_teams = [u.as_dict() for u in unknown]
        for u in unknown:
            log.warning(
                "unknown_team league=%s team=%r season=%s decision=%s nearest=%s matches=%d",
                u.league, u.team, u.season, u.decision, u.nearest, u.matches,
            )  # fmt: skip
        report.rows = len(kept)
        ordered = sorted(kept, key=lambda r: (r.date, r.league, r.home_team))
        new, changed = [], []
        now = datetime.now(UTC)  # result_at: when the store got a match's current result (live scoring's clock)
        for r in ordered:
            found = existing.get(r.key)
            row: dict[str, Any] = {
                "season": r.season,
                "home_goals": r.home_goals,
                "away_goals": r.away_goals,
                "result": r.result,
                "referee": r.referee,
                "stats": r.stats,
                "source": r.source,
            }
            if found is None:
                new.append(
                    {"league": r.league, "date": r.date, "home_team": r.home_team, "away_team": r.away_team, **row}
                    | {"result_at": now if r.result is not None else None}
                )
            elif found[1] != r.values():
                if found[1][1:4] != (r.home_goals, r.away_goals, r.result):  # the score arrived or changed
                    row["result_at"] = now if r.result is not None else None
                changed.append({"match_id": found[0], **row})
                was = found[1][1:3]
                if was[0] is not None and was != (r.home_goals, r.away_goals):
                    report.rewritten.append(_rewrite(found[0], r, was))
        if new:
            s.execute(insert(Match), new)
        if changed:
            s.execute(update(Match), changed)
    report.inserted, report.updated = len(new), len(changed)
    if progress:
        progress("saving matches", 1, 1)
    report.unchanged = report.rows - report.inserted - report.updated
    return report


def _rewrite(match_id: int, r: ParsedMatch, was: tuple[Any, ...]) -> dict[str, Any]:
    """A past result whose score a file changed: applied, and logged here."""
    now = None if r.home_goals is None else f"{r.home_goals}-{r.away_goals}"
    change = {
        "match_id": match_id,
        "league": r.league,
        "date": r.date.isoformat(),
        "home_team": r.home_team,
        "away_team": r.away_team,
        "was": f"{was[0]}-{was[1]}",
        "now": now,
        "source": r.source,
    }
    log.warning(
        "result_rewritten match_id=%d %s %s %s-%s: was %s, now %s (from %s)",
        match_id, r.league, r.date, r.home_team, r.away_team, change["was"], now, r.source,
    )  # fmt: skip
    return change
