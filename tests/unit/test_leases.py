"""The store's leases (one retrain at a time on every host): taken by one holder, refused to others with who holds
it, lapsing at their expiry, released only by their holder. ``check_leases`` runs on PostgreSQL too
(``tests/integration/test_postgres.py``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from matchcast.config import Settings
from matchcast.data.store import MatchStore
from matchcast.errors import Conflict
from matchcast.service.retrain import RETRAIN_LEASE, retrain


def check_leases(store: MatchStore) -> None:
    assert store.take_lease("job", "a", 60) is None
    held = store.take_lease("job", "b", 60)
    assert held is not None and held.holder == "a" and 59 <= (held.expires_at - held.acquired_at).total_seconds() <= 60
    assert store.take_lease("other", "b", 60) is None  # leases are per name
    store.release_lease("job", "b")  # not b's to give back
    assert store.take_lease("job", "c", 60) is not None
    store.release_lease("job", "a")
    assert store.take_lease("job", "c", 0.5) is None
    time.sleep(0.7)
    assert store.take_lease("job", "d", 60) is None  # c's lapsed
    store.release_lease("job", "c")  # lapsed and taken since: stays d's
    assert (store.take_lease("job", "e", 60) or held).holder == "d"
    store.release_lease("job", "d")

    # Many asking at once: exactly one gets it.
    won: list[str] = []
    start = threading.Barrier(8)

    def ask(who: str) -> None:
        start.wait()
        if store.take_lease("race", who, 60) is None:
            won.append(who)

    threads = [threading.Thread(target=ask, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_leases_on_sqlite(tmp_path: Path) -> None:
    check_leases(MatchStore(f"sqlite:///{tmp_path / 'm.db'}"))


def test_a_second_retrain_is_refused_while_one_holds_the_lease(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = MatchStore(settings.resolved_database_url())
    assert store.take_lease(RETRAIN_LEASE, "worker-1:4242:abcd", 600) is None
    with pytest.raises(Conflict, match=r"a retrain is running already \(worker-1:4242:abcd, since .* UTC"):
        retrain(settings)
    assert store.count() == 0  # refused before it read or trained anything
    store.release_lease(RETRAIN_LEASE, "worker-1:4242:abcd")
