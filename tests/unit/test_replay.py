"""The season replay: files as a feed publishes them day by day, served over real HTTP with conditional GET."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import httpx
import pytest

from matchcast.data.ingest import parse_file
from matchcast.data.replay import season_files
from matchcast.service.replay import ReplayFeeds, days_between, serve

START = date(2026, 4, 1)


@pytest.fixture(scope="module")
def seasons():  # type: ignore[no-untyped-def]
    return season_files("2025/26")


def test_a_day_publishes_results_before_it_and_fixtures_from_it_on(seasons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pl = seasons["premier-league"]
    path = tmp_path / "premier-league.csv"
    path.write_bytes(pl.render(START))
    rows, _ = parse_file(path)
    played = [r for r in rows if r.result is not None]
    assert len(rows) == len(pl.rows) == 380
    assert played and all(r.date < START for r in played)
    assert all(r.home_goals is None and not r.stats and r.referee is None for r in rows if r.date >= START)
    assert len(played) == pl.played_before(START)
    # The file of a later day reveals exactly the results in between, as the bundled file has them.
    later = date(2026, 4, 14)
    path.write_bytes(pl.render(later))
    revealed = {r.key: r for r in parse_file(path)[0] if r.result is not None and START <= r.date < later}
    source = Path(__file__).parents[2] / "src/matchcast/data/bundled/premier-league/season-2526.csv"
    truth = {r.key: r for r in parse_file(source)[0] if START <= r.date < later}
    assert revealed.keys() == truth.keys() and revealed
    assert all(revealed[k].values()[1:] == truth[k].values()[1:] for k in truth)


def test_replay_days_step_to_the_day_after_each_match_day(seasons) -> None:  # type: ignore[no-untyped-def]
    days = days_between(START, date(2026, 4, 30), seasons)
    assert days[0] == START and days == sorted(set(days))
    match_days = {d for s in seasons.values() for d in s.dates() if START <= d <= date(2026, 4, 30)}
    assert {date.fromordinal(d.toordinal() + 1) for d in match_days} <= set(days)


def test_the_server_answers_conditional_gets_and_moves_on_with_the_day(seasons) -> None:  # type: ignore[no-untyped-def]
    feeds = ReplayFeeds(seasons, START)
    server = serve(feeds, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            first = client.get("/serie-a.csv")
            assert first.status_code == 200 and first.headers["etag"]
            assert first.content == seasons["serie-a"].render(START)
            again = client.get("/serie-a.csv", headers={"If-None-Match": first.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            before = client.get("/").json()["results"]
            feeds.advance(date(2026, 4, 20))
            assert client.get("/").json()["results"] > before
            moved = client.get("/serie-a.csv", headers={"If-None-Match": first.headers["etag"]})
            assert moved.status_code == 200 and moved.headers["etag"] != first.headers["etag"]
            assert client.get("/nowhere.csv").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_replay_registers_its_feeds_beside_others_and_takes_them_out_again(tmp_path: Path) -> None:
    from matchcast.cli.replay import register_feeds, unregister_feeds

    (tmp_path / "feeds.json").write_text('[{"name": "mine", "url": "https://example.org/E0.csv"}]')
    path = register_feeds(tmp_path, "http://127.0.0.1:9", ["la-liga", "serie-a"])
    names = [f["name"] for f in json.loads(path.read_text())]
    assert names == ["mine", "replay-la-liga", "replay-serie-a"]
    register_feeds(tmp_path, "http://127.0.0.1:9", ["la-liga"])  # again: replaced, not doubled
    assert [f["name"] for f in json.loads(path.read_text())] == ["mine", "replay-la-liga"]
    unregister_feeds(tmp_path)
    assert [f["name"] for f in json.loads(path.read_text())] == ["mine"]
