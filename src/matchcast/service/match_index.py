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
