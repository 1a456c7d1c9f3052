"""Which match ids exist, answered from memory: the API checks every request's match id without a query."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from matchcast.data.store import Match, MatchStore


class KnownMatches:
    """A set of stored match ids, reloaded at most every ``ttl_s`` when an id is not found in it."""

    def __init__(self, store: MatchStore, ttl_s: float = 30.0) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._ids: frozenset[int] = frozenset()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def quick(self, match_id: int) -> bool:
        """True if the id is known without asking the store (the common case, free of I/O)."""
        return match_id in self._ids

    def contains(self, match_id: int) -> bool:
        """Whether a match exists; an unseen id reloads the set (ingest may have added it), at most once per ttl."""
        if match_id in self._ids:
            return True
        with self._lock:
            if time.monotonic() - self._loaded_at >= self.ttl_s:
                with self.store.session() as s:
                    self._ids = frozenset(s.scalars(select(Match.match_id)).all())
                self._loaded_at = time.monotonic()
            if match_id in self._ids:
                return True
        return self.store.get(match_id) is not None


class FeatureRevisions:
    """{match_id: feature revision} in memory, brought up to date by ``refresh`` from the rows changed since.

    The API puts a match's revision in its automatic idempotency keys without a query per request; a refresh
    reads only the feature rows whose change number (``match_features.seq``) is above the last one seen."""

    def __init__(self, store: MatchStore) -> None:
        self.store = store
        self.seq: int | None = None  # None until the first read, which reads every row
        self._revisions: dict[int, str | None] = {}
        self._lock = threading.Lock()

    def get(self, match_id: int) -> str | None:
        """The match's feature revision as last read (None: no features, or none read yet)."""
        return self._revisions.get(match_id)

    def refresh(self) -> int:
        """Read the revisions changed since the last refresh; returns how many."""
        with self._lock:
            seq, changed = self.store.revisions_since(self.seq)
            self._revisions.update(changed)
            self.seq = seq
            return len(changed)
