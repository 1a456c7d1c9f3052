"""Each feed's state in the match store (table ``feed_state``): what every worker host needs to read it again.

The validators of a conditional GET (``ETag``, ``Last-Modified``) and the digest of the last file ingested, so a
file that did not change is neither fetched in full nor ingested again; and the outcomes (last success, failing
since, failures by reason) that ``/ready`` and the metrics report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from matchcast.data.store import FeedState, MatchStore


@dataclass(frozen=True)
class FeedStatus:
    """A feed's state as plain data."""

    name: str
    url: str
    etag: str | None
    last_modified: str | None
    digest: str | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    failing_since: datetime | None
    last_reason: str | None
    last_error: str | None
    failures: dict[str, int]
    last_report: dict[str, Any] | None

    @classmethod
    def of(cls, row: FeedState) -> FeedStatus:
        """Copy a mapped row."""
        return cls(
            row.name,
            row.url,
            row.etag,
            row.last_modified,
            row.digest,
            _aware(row.last_attempt_at),
            _aware(row.last_success_at),
            _aware(row.failing_since),
            row.last_reason,
            row.last_error,
            dict(row.failures or {}),
            row.last_report,
        )


def _aware(t: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were written in UTC."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def feed_states(store: MatchStore) -> dict[str, FeedStatus]:
    """Every feed's state, by name."""
    with store.session() as s:
        return {r.name: FeedStatus.of(r) for r in s.scalars(select(FeedState))}


def feed_state(store: MatchStore, name: str) -> FeedStatus | None:
    """One feed's state, or None if it was never read."""
    with store.session() as s:
        row = s.get(FeedState, name)
        return FeedStatus.of(row) if row else None


def _row(s: Any, name: str, url: str) -> FeedState:
    row: FeedState | None = s.get(FeedState, name, with_for_update=True)
    if row is None:
        row = FeedState(name=name, url=url, failures={})
        s.add(row)
    row.url = url
    return row


def record_success(
    store: MatchStore,
    name: str,
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    digest: str | None,
    report: dict[str, Any] | None,
) -> None:
    """A read that left the store current: new validators (when the file was read) and the report of its ingest."""
    now = datetime.now(UTC)
    with store.session() as s:
        row = _row(s, name, url)
        if digest is not None:  # a 304 or an unchanged file keeps what it had
            row.etag, row.last_modified, row.digest = etag, last_modified, digest
        if report is not None:
            row.last_report = report
        row.last_attempt_at = row.last_success_at = now
        row.failing_since, row.last_reason, row.last_error = None, None, None


def record_failure(store: MatchStore, name: str, url: str, *, reason: str, error: str) -> None:
    """A read that changed nothing: why, counted by reason."""
    now = datetime.now(UTC)
    with store.session() as s:
        row = _row(s, name, url)
        row.last_attempt_at = now
        row.failing_since = row.failing_since or now
        row.last_reason, row.last_error = reason, error[:2000]
        failures = dict(row.failures or {})
        failures[reason] = failures.get(reason, 0) + 1
        row.failures = failures
