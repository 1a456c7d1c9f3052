"""Replay a season through the real feed path: a local HTTP server publishes each league's file as of a day.

The server answers ``GET /<league>.csv`` with the file of the current replay day, with an ETag and a
Last-Modified time (a conditional GET of an unchanged file gets 304), and ``GET /`` with the day and the
results published so far. ``advance`` moves the day on; nothing else changes what it serves.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from matchcast.data.replay import LeagueSeason, etag_of


class ReplayFeeds:
    """What the replay publishes: the current day and, per league, its rendered file (cached per day)."""

    def __init__(self, seasons: dict[str, LeagueSeason], day: date) -> None:
        self.seasons = seasons
        self._lock = threading.Lock()
        self._files: dict[str, tuple[bytes, str, str]] = {}
        self.day = day
        self._render(day)

    def _render(self, day: date) -> None:
        files = {}
        for league, season in self.seasons.items():
            body = season.render(day)
            old = self._files.get(league)
            if old is not None and old[1] == etag_of(body):
                files[league] = old  # unchanged: keeps its Last-Modified
            else:
                files[league] = (body, etag_of(body), format_datetime(datetime.now(UTC), usegmt=True))
        with self._lock:
            self.day, self._files = day, files

    def advance(self, day: date) -> int:
        """Publish the files as of ``day``; returns how many results they hold in all."""
        self._render(day)
        return self.published()

    def published(self) -> int:
        """Results in the files of the current day."""
        return sum(s.played_before(self.day) for s in self.seasons.values())

    def file(self, league: str) -> tuple[bytes, str, str] | None:
        """(body, ETag, Last-Modified) of a league's file today, or None."""
        with self._lock:
            return self._files.get(league)


def serve(feeds: ReplayFeeds, host: str, port: int) -> ThreadingHTTPServer:
    """Start the feed server in a daemon thread; ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].strip("/")
            if path == "":
                index = {"day": feeds.day.isoformat(), "results": feeds.published(), "leagues": sorted(feeds.seasons)}
                self._send(HTTPStatus.OK, json.dumps(index).encode(), {"Content-Type": "application/json"})
                return
            found = feeds.file(path.removesuffix(".csv")) if path.endswith(".csv") else None
            if found is None:
                self._send(HTTPStatus.NOT_FOUND, b'{"error": "no such feed"}', {"Content-Type": "application/json"})
                return
            body, etag, modified = found
            headers = {"ETag": etag, "Last-Modified": modified, "Cache-Control": "no-cache"}
            if self.headers.get("If-None-Match") == etag:
                self._send(HTTPStatus.NOT_MODIFIED, b"", headers)
                return
            self._send(HTTPStatus.OK, body, {**headers, "Content-Type": "text/csv; charset=utf-8"})

        do_HEAD = do_GET

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="replay-feeds", daemon=True).start()
    return server


def days_between(start: date, end: date, seasons: dict[str, LeagueSeason]) -> list[date]:
    """The replay's days: ``start``, then each match day after it up to ``end``, and the day after the last.

    Publishing on day ``D`` reveals the results of matches before ``D``, so the day after a match day is when
    its results arrive."""
    match_days = sorted({d for s in seasons.values() for d in s.dates() if start <= d <= end})
    out = [start]
    for d in match_days:
        nxt = date.fromordinal(d.toordinal() + 1)
        if nxt > out[-1]:
            out.append(nxt)
    return out


def sleep_until(deadline: float) -> None:
    """Sleep until a monotonic deadline (returns at once if it has passed)."""
    time.sleep(max(0.0, deadline - time.monotonic()))
