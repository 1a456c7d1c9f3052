"""Feeds against a real local HTTP server: conditional reads, caps, failures that keep the last good data,
history rewrites, team aliases and the unknown-team screen."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from matchcast.config import Settings
from matchcast.data.feed_state import feed_state
from matchcast.data.ingest import parse_text
from matchcast.data.store import Match
from matchcast.data.teams import BUNDLED_ALIASES, load_aliases
from matchcast.errors import IngestError, InvalidInput
from matchcast.service.feeds import Feed, check_upload, feed_problems, ingest_feed, load_feeds
from matchcast.service.wiring import store_for
from matchcast.tasks.names import INGEST_FEEDS_TASK, MAINTENANCE_QUEUE, PRUNE_LOG_TASK
from matchcast.tasks.schedule import beat_schedule
from tests.conftest import base_settings

HEADER = "Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\n"
BASE = (
    HEADER + "E0,16/08/2025,Man United,Wolves,2,1,H\n"
    "E0,16/08/2025,Arsenal,Chelsea,1,1,D\n"
    "E0,23/08/2025,Wolves,Arsenal,0,3,A\n"
    "E0,23/08/2025,Chelsea,Man United,2,2,D\n"
)


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    etag: str | None = None
    length: int | None = None  # a Content-Length that may lie (truncation)
    location: str | None = None
    hits: list[dict[str, str]] = field(default_factory=list)


class FeedServer:
    """A real HTTP server in a thread, answering each path as its ``Route`` says."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.hits.append(dict(self.headers))
                if route.location:
                    self.send_response(302)
                    self.send_header("Location", route.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.etag:
                    self.send_header("ETag", route.etag)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(route.length if route.length is not None else len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
                if route.length is not None:
                    self.close_connection = True

            def log_message(self, *_: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path: str, body: str | bytes = b"", **kw: object) -> str:
        self.routes[path] = Route(body=body.encode() if isinstance(body, str) else body, **kw)  # type: ignore[arg-type]
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    s = FeedServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path, feed_max_bytes=4096, feed_timeout_s=5, feed_max_redirects=2)


def scores(settings: Settings) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    with store_for(settings).session() as s:
        rows = s.execute(select(Match.home_team, Match.away_team, Match.home_goals, Match.away_goals)).all()
    return {(h, a): (hg, ag) for h, a, hg, ag in rows}


def good_feed(settings: Settings, server: FeedServer) -> Feed:
    """A feed already read once: the store holds its four results."""
    feed = Feed("pl", server.serve("/pl.csv", BASE, etag='"v1"'))
    out = ingest_feed(settings, feed)
    assert out["outcome"] == "ingested" and out["report"]["inserted"] == 4
    return feed


def test_a_conditional_get_answered_304_changes_nothing_and_counts_as_a_success(
    settings: Settings, server: FeedServer
) -> None:
    feed = good_feed(settings, server)
    before = feed_state(store_for(settings), "pl")
    out = ingest_feed(settings, feed)
    assert out["outcome"] == "not_modified"
    hits = server.routes["/pl.csv"].hits
    assert hits[0].get("If-None-Match") is None and hits[1].get("If-None-Match") == '"v1"'
    after = feed_state(store_for(settings), "pl")
    assert before is not None and after is not None and after.etag == '"v1"'
    assert after.digest == hashlib.sha256(BASE.encode()).hexdigest()
    assert after.last_success_at is not None and before.last_success_at is not None
    assert after.last_success_at >= before.last_success_at and after.failing_since is None


def test_a_file_without_validators_that_did_not_change_is_not_ingested_again(
    settings: Settings, server: FeedServer
) -> None:
    feed = Feed("pl", server.serve("/plain.csv", BASE))
    assert ingest_feed(settings, feed)["outcome"] == "ingested"
    assert ingest_feed(settings, feed)["outcome"] == "unchanged"


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ({"body": "oops", "status": 500}, "http_status"),
        ({"body": BASE, "length": len(BASE) + 500}, "truncated"),  # the connection closes before the announced end
        ({"body": BASE + "E0,30/08/2025,Man United,Ars"}, "malformed"),  # cut in the middle of a line
        ({"body": BASE + "E0,30/08/2025,Arsenal,Wolves,x,1,H\n"}, "malformed"),
        ({"body": "x" * 5000}, "too_large"),
        ({"location": "/loop.csv"}, "redirects"),
    ],
    ids=["500", "truncated-length", "truncated-line", "malformed", "oversized", "redirect-loop"],
)
def test_a_failing_read_keeps_the_last_good_data_and_says_why(
    settings: Settings, server: FeedServer, route: dict[str, object], reason: str
) -> None:
    feed = good_feed(settings, server)
    before = scores(settings)
    server.serve("/loop.csv", **route)  # type: ignore[arg-type]
    out = ingest_feed(settings, Feed("pl", server.base + "/loop.csv"))
    assert out["outcome"] == "failed" and out["reason"] == reason, out
    assert scores(settings) == before
    state = feed_state(store_for(settings), feed.name)
    assert state is not None and state.failing_since is not None and state.failures == {reason: 1}
    assert state.last_reason == reason and state.last_error == out["error"]
    problems = feed_problems(settings, [feed])
    assert problems["pl"].startswith("failing since") and f"({reason})" in problems["pl"]
    if reason == "malformed" and "where" in out:
        where = out["where"]
        assert where["file"] == "pl" and where["line"] == 6
        assert where["column"] in ("FTHG", None)


def test_a_malformed_file_names_its_line_and_column(settings: Settings, server: FeedServer) -> None:
    good_feed(settings, server)
    url = server.serve("/bad.csv", BASE + "E0,30/08/2025,Arsenal,Wolves,x,1,H\n")
    out = ingest_feed(settings, Feed("pl", url))
    assert out["where"] == {"file": "pl", "line": 6, "column": "FTHG"}
    assert "pl, line 6, column FTHG" in out["error"]


def test_a_connection_refused_is_unreachable(settings: Settings) -> None:
    from tests.conftest import free_port

    out = ingest_feed(settings, Feed("down", f"http://127.0.0.1:{free_port()}/x.csv"))
    assert (out["outcome"], out["reason"]) == ("failed", "unreachable")


def test_a_success_after_failures_clears_them(settings: Settings, server: FeedServer) -> None:
    feed = good_feed(settings, server)
    server.routes["/pl.csv"].status, server.routes["/pl.csv"].etag = 503, None
    assert ingest_feed(settings, feed)["reason"] == "http_status"
    server.routes["/pl.csv"].status = 200
    server.routes["/pl.csv"].body = (BASE + "E0,30/08/2025,Arsenal,Man United,,,\n").encode()
    out = ingest_feed(settings, feed)
    assert out["outcome"] == "ingested" and out["report"]["inserted"] == 1
    assert feed_problems(settings, [feed]) == {}
    state = feed_state(store_for(settings), "pl")
    assert state is not None and state.failures == {"http_status": 1} and state.failing_since is None


def test_a_file_that_rewrites_history_is_applied_and_reported(
    settings: Settings, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    feed = good_feed(settings, server)
    server.routes["/pl.csv"].body = BASE.replace("Arsenal,Chelsea,1,1,D", "Arsenal,Chelsea,2,1,H").encode()
    server.routes["/pl.csv"].etag = '"v2"'
    with caplog.at_level("WARNING"):
        out = ingest_feed(settings, feed)
    assert scores(settings)[("Arsenal", "Chelsea")] == (2, 1)
    (change,) = out["report"]["rewritten"]
    assert (change["home_team"], change["away_team"], change["was"], change["now"]) == (
        "Arsenal",
        "Chelsea",
        "1-1",
        "2-1",
    )
    assert out["report"]["updated"] == 1
    assert any("result_rewritten" in r.getMessage() and "was 1-1, now 2-1" in r.getMessage() for r in caplog.records)


def test_a_feed_with_other_names_maps_aliases_flags_unknown_names_and_tells_promoted_teams(
    settings: Settings, server: FeedServer
) -> None:
    good_feed(settings, server)
    other = (
        "Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\n"
        "30/08/2025,Manchester United,Wolverhampton Wanderers,1,0,H\n"  # aliases: known teams
        "30/08/2025,Chelsey,Arsenal,0,1,A\n"  # a typo of Chelsea: held back, Chelsea offered
        "30/08/2025,Kingsmeadow Rovers,Arsenal,0,1,A\n"  # no close name, but 2025/26 is under way: held back
        "15/08/2026,Kingsmeadow Rovers,Chelsea,1,1,D\n"
        "15/08/2026,Wolverhampton,Man Utd,,,\n"
    )
    out = ingest_feed(settings, Feed("other", server.serve("/other.csv", other), league="premier-league"))
    report = out["report"]
    got = scores(settings)
    assert got[("Man United", "Wolves")] == (1, 0) and got[("Wolves", "Man United")] == (None, None)
    assert ("Manchester United", "Wolverhampton Wanderers") not in got
    unknown = {u["team"]: u for u in report["unknown_teams"]}
    assert set(unknown) == {"Chelsey", "Kingsmeadow Rovers"}
    assert unknown["Chelsey"]["decision"] == "held_back" and unknown["Chelsey"]["nearest"][0] == "Chelsea"
    assert unknown["Kingsmeadow Rovers"] == {
        "league": "premier-league",
        "team": "Kingsmeadow Rovers",
        "season": "2025/26",
        "decision": "held_back",
        "nearest": [],
        "matches": 2,
    }
    assert ("Chelsey", "Arsenal") not in got and ("Kingsmeadow Rovers", "Chelsea") not in got
    assert report["inserted"] == 2  # the aliased result and the aliased fixture; held-back rows not ingested

    # A new season the store has not seen: the same name, with no close known name, is a promoted team.
    promoted = "Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\n15/08/2026,Kingsmeadow Rovers,Chelsea,,,\n"
    out = ingest_feed(settings, Feed("next", server.serve("/next.csv", promoted), league="premier-league"))
    (flag,) = out["report"]["unknown_teams"]
    assert (flag["team"], flag["decision"], flag["season"]) == ("Kingsmeadow Rovers", "promoted", "2026/27")
    assert ("Kingsmeadow Rovers", "Chelsea") in scores(settings)


def test_the_user_alias_file_maps_names_and_declares_new_teams(settings: Settings, server: FeedServer) -> None:
    good_feed(settings, server)
    (settings.home / "team_aliases.json").write_text(
        json.dumps({"Chelsey": "Chelsea", "Arsenal Ladies": "Arsenal Ladies"})
    )
    body = (
        "Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\n30/08/2025,Chelsey,Wolves,3,0,H\n"
        "30/08/2025,Arsenal Ladies,Man United,0,0,D\n"
    )
    out = ingest_feed(settings, Feed("mine", server.serve("/mine.csv", body), league="premier-league"))
    assert out["report"]["unknown_teams"] == [] and out["report"]["inserted"] == 2
    assert scores(settings)[("Chelsea", "Wolves")] == (3, 0)


def test_no_bundled_alias_renames_a_name_of_the_bundled_data() -> None:
    from matchcast.data.ingest import bundled_files, parse_file

    names = {t for p in bundled_files() for r in parse_file(p)[0] for t in (r.home_team, r.away_team)}
    assert set(BUNDLED_ALIASES.values()) <= names
    assert not set(BUNDLED_ALIASES) & names
    aliases = load_aliases(None)
    assert aliases("  manchester  united ") == "Man United" and aliases("Wolves") == "Wolves"


def test_parse_text_reads_football_data_fixtures_layout() -> None:
    text = "Div,Date,Time,HomeTeam,AwayTeam,FTHG,FTAG,FTR,B365H\nE0,22/08/2026,15:00,Arsenal,Chelsea,,,,1.9\n"
    (row,), held = parse_text(text, "fixtures.csv", aliases=load_aliases(None))
    assert (row.league, row.season, row.result, row.home_goals, held) == ("premier-league", "2026/27", None, None, 0)


def test_load_feeds_from_json_toml_and_home(tmp_path: Path) -> None:
    s = base_settings(tmp_path, feeds='[{"name": "pl", "url": "https://example.org/E0.csv"}]')
    assert load_feeds(s) == [Feed("pl", "https://example.org/E0.csv")]
    toml = tmp_path / "feeds.toml"
    toml.write_text('[[feed]]\nname = "own"\nurl = "/data/own.csv"\nleague = "my-league"\n')
    assert load_feeds(base_settings(tmp_path)) == [Feed("own", "/data/own.csv", "my-league")]
    assert load_feeds(base_settings(tmp_path, feeds=str(toml)))[0].league == "my-league"
    for bad, says in (
        ('[{"name": "pl"}]', "needs a name and a url"),
        ('[{"name": "a", "url": "ftp://x/y"}]', "http(s) or a local path"),
        ('[{"name": "a", "url": "/x"}, {"name": "a", "url": "/y"}]', "unique"),
        ("[not json", "not JSON"),
    ):
        with pytest.raises(InvalidInput, match=re.escape(says)):
            load_feeds(base_settings(tmp_path, feeds=bad))


def test_a_local_path_feed_is_read_and_capped(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "own.csv"
    path.write_text(BASE)
    assert ingest_feed(settings, Feed("own", str(path)))["report"]["inserted"] == 4
    path.write_text(BASE + "E0,30/08/2025,Arsenal,Man United,,,\n" * 200)
    out = ingest_feed(settings, Feed("own", str(path)))
    assert (out["outcome"], out["reason"]) == ("failed", "too_large")


def test_an_upload_is_checked_before_it_is_queued(settings: Settings) -> None:
    assert check_upload(BASE.encode(), "up.csv", league=None, settings=settings) == 4
    with pytest.raises(IngestError) as caught:
        check_upload((BASE + "E0,bad,Arsenal,Wolves,1,1,D\n").encode(), "up.csv", league=None, settings=settings)
    assert (caught.value.path, caught.value.line, caught.value.column) == ("up.csv", 6, "Date")
    with pytest.raises(IngestError, match="larger than 4096 bytes"):
        check_upload(b"x" * 5000, "up.csv", league=None, settings=settings)


def test_the_beat_schedule_sends_feeds_retrain_and_pruning_on_the_maintenance_queue(tmp_path: Path) -> None:
    schedule = beat_schedule(base_settings(tmp_path, feeds_interval_s=120))
    entry = schedule["ingest-feeds"]
    assert entry["task"] == INGEST_FEEDS_TASK and entry["schedule"] == 120
    assert entry["options"]["queue"] == MAINTENANCE_QUEUE
    assert schedule["retrain-model"]["options"]["queue"] == MAINTENANCE_QUEUE  # weekly by default
    prune = schedule["prune-prediction-log"]  # daily by default
    assert prune["task"] == PRUNE_LOG_TASK and prune["schedule"] == 86400
    assert prune["options"]["queue"] == MAINTENANCE_QUEUE
    assert set(beat_schedule(base_settings(tmp_path, feeds_interval_s=0))) == {"retrain-model", "prune-prediction-log"}
    never = {"feeds_interval_s": 0, "retrain_every_s": 0, "prediction_log_prune_every_s": 0}
    assert beat_schedule(base_settings(tmp_path, **never)) == {}


def test_an_unreadable_alias_file_fails_the_read_and_changes_nothing(settings: Settings, server: FeedServer) -> None:
    feed = good_feed(settings, server)
    before = scores(settings)
    (settings.home / "team_aliases.json").write_text('["not", "an", "object"]')
    server.routes["/pl.csv"].body, server.routes["/pl.csv"].etag = (
        (BASE + "E0,30/08/2025,Arsenal,Wolves,1,0,H\n").encode(),
        None,
    )
    out = ingest_feed(settings, feed)
    assert (out["outcome"], out["reason"]) == ("failed", "invalid") and "team_aliases.json" in out["error"]
    assert scores(settings) == before


def test_a_task_status_shows_an_upload_report_or_its_error_and_hides_other_maintenance_results() -> None:
    from matchcast.tasks.status import task_status

    report = {"kind": "ingest", "name": "a.csv", "rows": 1, "inserted": 1, "updated": 0, "unchanged": 0}
    status = task_status("t", {"status": "SUCCESS", "result": report | {"features_changed": 3}})
    assert status.ingest is not None and status.ingest.inserted == 1 and status.result is None
    feeds = task_status("t", {"status": "SUCCESS", "result": {"kind": "feeds", "feeds": []}})
    assert (feeds.status, feeds.result, feeds.ingest) == ("SUCCESS", None, None)
    failed = {
        "status": "FAILURE",
        "result": {"exc_type": "IngestError", "exc_message": ["a.csv, line 3, column FTHG: x"]},
    }
    assert task_status("t", failed).error == "IngestError: a.csv, line 3, column FTHG: x"
