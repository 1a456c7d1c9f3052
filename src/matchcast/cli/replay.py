"""`matchcast replay`: the held-back season played day by day through the real feed path of a running stack.

Each replay day the local feed server publishes the league files as of that day (results before it, fixtures
from it on) and the command registers those files as feeds (``replay-<league>`` in HOME/feeds.json), so that the
stack's beat picks them up like any other feed. It then waits until the stack has taken the results in (the
previous match day has no upcoming match left, as ``GET /predict/matches/`` tells) and asks the API for a
forecast of every match of the day (one async batch), before the day's results are published: the forecasts
that the live scores of ``GET /monitoring/live`` are made of.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from matchcast.data.ingest import season_of
from matchcast.data.replay import season_files
from matchcast.service.replay import ReplayFeeds, days_between, serve, sleep_until

FEED_PREFIX = "replay-"
BATCH_MAX = 1000  # the batch endpoint's limit


@dataclass(frozen=True)
class ReplayPlan:
    """What to replay and against what."""

    start: date
    end: date
    day_seconds: float
    api_url: str
    api_key: str | None
    host: str
    port: int
    home: Path
    ingest_timeout_s: float = 600.0
    hold: bool = True


def register_feeds(home: Path, base_url: str, leagues: list[str]) -> Path:
    """Put the replay's feeds into HOME/feeds.json, keeping every other feed there."""
    path = home / "feeds.json"
    feeds: list[dict[str, Any]] = []
    if path.exists():
        loaded = json.loads(path.read_text(encoding="utf-8") or "[]")
        feeds = [f for f in loaded if not str(f.get("name", "")).startswith(FEED_PREFIX)]
    feeds += [{"name": f"{FEED_PREFIX}{lg}", "url": f"{base_url}/{lg}.csv", "league": lg} for lg in leagues]
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(feeds, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def unregister_feeds(home: Path) -> None:
    """Take the replay's feeds out of HOME/feeds.json again."""
    path = home / "feeds.json"
    if not path.exists():
        return
    kept = [f for f in json.loads(path.read_text(encoding="utf-8") or "[]") if not f["name"].startswith(FEED_PREFIX)]
    path.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")


class StackClient:
    """The few API calls the replay makes."""

    def __init__(self, url: str, key: str | None) -> None:
        headers = {"X-API-Key": key} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def upcoming_ids(self, first: date, last: date) -> list[int]:
        """Ids of the matches from ``first`` to ``last`` still without a result."""
        out: list[int] = []
        while True:
            params: dict[str, str | int] = {
                "from": first.isoformat(),
                "to": last.isoformat(),
                "limit": 200,
                "offset": len(out),
            }
            page = self.http.get("/predict/matches/", params=params)
            page.raise_for_status()
            body = page.json()
            out += [m["match_id"] for m in body["items"]]
            if len(out) >= body["total"] or not body["items"]:
                return out

    def forecast(self, match_ids: list[int], deadline: float) -> dict[str, int]:
        """Predict these matches as one async batch and wait until it is done: its counts by state."""
        urls = []
        for i in range(0, len(match_ids), BATCH_MAX):
            r = self.http.post("/predict/async/batch", json={"match_ids": match_ids[i : i + BATCH_MAX]})
            r.raise_for_status()
            urls.append(r.json()["status_url"])
        counts: dict[str, int] = {}
        for url in urls:
            while True:
                status = self.http.get(url, params={"limit": 1})
                status.raise_for_status()
                body = status.json()
                if body["status"] in ("DONE", "CANCELLED") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            for state, n in body["counts"].items():
                counts[state] = counts.get(state, 0) + n
        return counts


def run(plan: ReplayPlan, console: Console) -> int:
    """Play the season from ``plan.start`` to ``plan.end``; then keep serving the last day until interrupted."""
    seasons = season_files(season_of(plan.start))
    feeds = ReplayFeeds(seasons, plan.start)
    server = serve(feeds, plan.host, plan.port)
    base = f"http://{plan.host}:{server.server_address[1]}"
    where = register_feeds(plan.home, base, sorted(seasons))
    console.print(f"replay: feeds at {base}/<league>.csv, registered in {where}")
    client = StackClient(plan.api_url, plan.api_key)
    days = days_between(plan.start, plan.end, seasons)
    match_days = sorted({d for s in seasons.values() for d in s.dates() if plan.start <= d <= plan.end})
    try:
        for day, until in zip(days, [*days[1:], None], strict=True):
            started = time.monotonic()
            line = f"{day}: {feeds.advance(day)} results published"
            played = [d for d in match_days if d < day]
            if played and not _taken_in(client, played[-1], started + plan.ingest_timeout_s):
                console.print(f"[red]{line}; the stack has not taken in the results of {played[-1]}: stopping[/red]")
                return 1
            if until is not None:  # forecast what is played before the next publication
                todays = client.upcoming_ids(day, until - timedelta(days=1))
                if todays:
                    counts = client.forecast(todays, time.monotonic() + plan.ingest_timeout_s)
                    line += f"; forecast {len(todays)} matches to {until - timedelta(days=1)}: {counts}"
            console.print(line)
            sleep_until(started + plan.day_seconds)
        if plan.hold:
            console.print(f"replay: done at {days[-1]}; serving the last day's files until Ctrl-C")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.shutdown()
        server.server_close()
        unregister_feeds(plan.home)


def _taken_in(client: StackClient, match_day: date, deadline: float) -> bool:
    """Wait until no match of ``match_day`` is still upcoming in the stack (its results were ingested)."""
    while time.monotonic() < deadline:
        if not client.upcoming_ids(match_day, match_day):
            return True
        time.sleep(1.0)
    return False
