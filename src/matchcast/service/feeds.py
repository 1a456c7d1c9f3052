"""Feeds: football-data.co.uk layout CSV files read from a URL or a path, ingested when they changed.

A feed is read with a conditional GET (the ``ETag`` and ``Last-Modified`` kept in the store's ``feed_state``),
within ``MATCHCAST_FEED_MAX_BYTES``, ``MATCHCAST_FEED_TIMEOUT_S`` and ``MATCHCAST_FEED_MAX_REDIRECTS``. A file
whose digest is the one last ingested is not ingested again. A feed that is down, or a file that is oversized,
truncated or malformed, changes nothing: the store keeps the last good data and the feed's state says why
(``FeedError.reason``). A good file is ingested in one transaction, then features are refreshed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from matchcast.config import Settings, redact_url
from matchcast.data.features import refresh_features
from matchcast.data.feed_state import FeedStatus, feed_state, feed_states, record_failure, record_success
from matchcast.data.ingest import IngestReport, decode, parse_text, save
from matchcast.data.teams import load_aliases
from matchcast.errors import FeedError, IngestError, InvalidInput
from matchcast.service.wiring import store_for

log = logging.getLogger(__name__)
USER_AGENT = "matchcast-feeds"


@dataclass(frozen=True)
class Feed:
    """One source: its name, an http(s) URL or a local path, and the league of a file without ``Div``."""

    name: str
    url: str
    league: str | None = None

    @property
    def remote(self) -> bool:
        """Whether it is read over HTTP."""
        return urlsplit(self.url).scheme in ("http", "https")


def load_feeds(settings: Settings) -> list[Feed]:
    """The feed list: ``MATCHCAST_FEEDS`` (JSON, or a .json/.toml file's path), else HOME/feeds.toml or .json."""
    raw = (settings.feeds or "").strip()
    where = "MATCHCAST_FEEDS"
    if not raw:
        found = [p for p in (settings.home / "feeds.toml", settings.home / "feeds.json") if p.exists()]
        if not found:
            return []
        raw, where = str(found[0]), str(found[0])
    if raw[0] in "[{":
        data: Any = _json(raw, where)
    else:
        path = Path(raw).expanduser()
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"{where}: cannot read the feed list ({exc.strerror})") from exc
        if path.suffix == ".toml":
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise InvalidInput(f"{where}: not TOML ({exc})") from exc
        else:
            data = _json(text, where)
    if isinstance(data, dict):
        data = data.get("feed", data.get("feeds"))
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: a feed list is [{{name, url, league?}}, ...] ([[feed]] tables in TOML)")
    feeds: list[Feed] = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("url"), str):
            raise InvalidInput(f"{where}: feed {n} needs a name and a url (strings)")
        name, url, league = item["name"].strip(), item["url"].strip(), item.get("league")
        if not name or len(name) > 128 or not url:
            raise InvalidInput(f"{where}: feed {n}: name (1 to 128 characters) and url must not be empty")
        if league is not None and not isinstance(league, str):
            raise InvalidInput(f"{where}: feed {name!r}: league must be a string")
        if urlsplit(url).scheme not in ("http", "https", "file", ""):
            raise InvalidInput(f"{where}: feed {name!r}: url must be http(s) or a local path")
        feeds.append(Feed(name, url, league or None))
    if len({f.name for f in feeds}) != len(feeds):
        raise InvalidInput(f"{where}: feed names must be unique")
    return feeds


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{where}: not JSON ({exc})") from exc


@dataclass(frozen=True)
class Fetched:
    """What a read gave: the file (None: not modified) and the validators to send next time."""

    content: bytes | None
    etag: str | None = None
    last_modified: str | None = None


def fetch(feed: Feed, state: FeedStatus | None, settings: Settings) -> Fetched:
    """Read a feed's file, conditionally; ``FeedError`` when it cannot be read or is too large."""
    cap = settings.feed_max_bytes
    if not feed.remote:
        path = Path(urlsplit(feed.url).path if feed.url.startswith("file:") else feed.url).expanduser()
        try:
            if path.stat().st_size > cap:
                raise FeedError("too_large", f"{path}: larger than {cap} bytes")
            return Fetched(path.read_bytes())
        except OSError as exc:
            raise FeedError("unreachable", f"{path}: cannot read the file ({exc.strerror})") from exc
    headers = {"User-Agent": USER_AGENT}
    if state is not None and state.url == feed.url and state.digest:
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
    shown = redact_url(feed.url)
    try:
        with (
            httpx.Client(
                timeout=settings.feed_timeout_s, follow_redirects=True, max_redirects=settings.feed_max_redirects
            ) as client,
            client.stream("GET", feed.url, headers=headers) as resp,
        ):
            if resp.status_code == 304:
                return Fetched(None, state.etag if state else None, state.last_modified if state else None)
            if resp.status_code >= 300:
                raise FeedError("http_status", f"{shown}: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise FeedError("too_large", f"{shown}: {declared} bytes announced, more than {cap}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > cap:
                    raise FeedError("too_large", f"{shown}: more than {cap} bytes")
            return Fetched(bytes(body), resp.headers.get("etag"), resp.headers.get("last-modified"))
    except httpx.TooManyRedirects as exc:
        raise FeedError("redirects", f"{shown}: more than {settings.feed_max_redirects} redirects") from exc
    except httpx.RemoteProtocolError as exc:  # e.g. the connection closed before the announced length
        raise FeedError("truncated", f"{shown}: the file was cut short ({exc})") from exc
    except httpx.TimeoutException as exc:
        raise FeedError("timeout", f"{shown}: no answer within {settings.feed_timeout_s} s") from exc
    except httpx.HTTPError as exc:
        raise FeedError("unreachable", f"{shown}: {type(exc).__name__}: {exc}") from exc


def report_dict(report: IngestReport, features_changed: int) -> dict[str, Any]:
    """An ingest report as JSON (what a task returns and the feed state keeps)."""
    return {
        "rows": report.rows,
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "features_changed": features_changed,
        "rewritten": report.rewritten,
        "unknown_teams": report.unknown_teams,
    }


def ingest_content(settings: Settings, name: str, content: bytes | str, *, league: str | None = None) -> dict[str, Any]:
    """Check and ingest one file's content in one transaction, then refresh features: the report as JSON.

    ``IngestError`` (file, line, column) for a malformed file: then nothing is written."""
    text = content if isinstance(content, str) else decode(content)
    aliases = load_aliases(settings.team_aliases_path())
    rows, _ = parse_text(text, name, league=league, aliases=aliases)
    store = store_for(settings)
    report = save(store, rows, IngestReport(files=[name]), aliases=aliases)
    changed = refresh_features(store) if report.inserted or report.updated else 0
    return report_dict(report, changed)


def check_upload(content: bytes, name: str, *, league: str | None, settings: Settings) -> int:
    """Check an upload before it is queued (size, text, layout): how many matches it holds; ``IngestError`` else."""
    if len(content) > settings.feed_max_bytes:
        raise IngestError(name, 0, None, f"larger than {settings.feed_max_bytes} bytes")
    rows, _ = parse_text(decode(content), name, league=league)
    if not rows:
        raise IngestError(name, 2, None, "the file holds no match")
    return len(rows)


def ingest_feed(
    settings: Settings, feed: Feed, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> dict[str, Any]:
    """Read and ingest one feed: ``{"feed", "outcome", "report"|"error", "reason"}``; failures change nothing."""
    store = store_for(settings)
    state = feed_state(store, feed.name)
    out: dict[str, Any] = {"feed": feed.name, "at": now().isoformat()}
    try:
        got = fetch(feed, state, settings)
        if got.content is None:
            record_success(store, feed.name, feed.url, etag=None, last_modified=None, digest=None, report=None)
            return out | {"outcome": "not_modified"}
        digest = hashlib.sha256(got.content).hexdigest()
        if state is not None and state.digest == digest:
            record_success(
                store, feed.name, feed.url, etag=got.etag, last_modified=got.last_modified, digest=digest, report=None
            )
            return out | {"outcome": "unchanged"}
        report = ingest_content(settings, feed.name, got.content, league=feed.league)
    except IngestError as exc:
        return _failed(store, feed, out, "malformed", exc.detail, exc)
    except FeedError as exc:
        return _failed(store, feed, out, exc.reason, exc.detail, exc)
    except InvalidInput as exc:  # e.g. an unreadable team_aliases.json: nothing is read until it is fixed
        return _failed(store, feed, out, "invalid", exc.detail, exc)
    record_success(
        store, feed.name, feed.url, etag=got.etag, last_modified=got.last_modified, digest=digest, report=report
    )
    log.info(
        "feed_ingested feed=%s inserted=%d updated=%d rewritten=%d unknown_teams=%d",
        feed.name, report["inserted"], report["updated"], len(report["rewritten"]), len(report["unknown_teams"]),
    )  # fmt: skip
    return out | {"outcome": "ingested", "report": report}


def _failed(store: Any, feed: Feed, out: dict[str, Any], reason: str, error: str, exc: Exception) -> dict[str, Any]:
    record_failure(store, feed.name, feed.url, reason=reason, error=error)
    log.warning("feed_failed feed=%s reason=%s error=%s", feed.name, reason, error)
    body: dict[str, Any] = {"outcome": "failed", "reason": reason, "error": error}
    if isinstance(exc, IngestError):
        body["where"] = {"file": exc.path, "line": exc.line, "column": exc.column}
    return out | body


def feed_problems(settings: Settings, feeds: list[Feed], now: datetime | None = None) -> dict[str, str]:
    """Feeds that failed since their last success, or were not read for ``MATCHCAST_FEEDS_STALE_S``: name -> why."""
    now = now or datetime.now(UTC)
    states = feed_states(store_for(settings))
    problems: dict[str, str] = {}
    for feed in feeds:
        st = states.get(feed.name)
        if st is None:
            continue
        if st.failing_since is not None:
            problems[feed.name] = f"failing since {st.failing_since.isoformat()} ({st.last_reason}): {st.last_error}"
        elif st.last_success_at and (now - st.last_success_at).total_seconds() > settings.feeds_stale_s:
            problems[feed.name] = f"stale: last read {st.last_success_at.isoformat()}"
    return problems
