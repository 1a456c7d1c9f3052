"""Losing the result backend's master host, on hosts of their own: mid-flood (async submissions and sync requests
on both APIs), the host of the Redis master is cut off the network, its Redis and its Sentinel with it. The two
other Sentinels (quorum 2) promote the replica on ``backend-2``; the APIs and workers, told only the Sentinels'
addresses, follow it. Later the host comes back and its Redis rejoins as the new master's replica.

The promise (README, "The result backend is not a single point of loss"): every task answered 202 ends
``SUCCESS`` or ``DEAD_LETTERED``, none is ever unknown (404) on the way nor left pending; sync requests get their
prediction or a 503/504 with a JSON body within their timeout; new requests succeed again within
``FOLLOW_BOUND_S`` of the loss.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx
import pytest

from matchcast.service.wiring import store_for
from tests.conftest import api_key
from tests.faults.conftest import wait_terminal as poll_terminal
from tests.faults.test_delivery import report
from tests.hosts.test_broker_loss import (
    SYNC_BOUND_S,
    TERMINAL,
    Flood,
    flood_counts,
    recovery_after,
    wait_ready_says,
)
from tests.hosts.topology import BACKENDS, NO_RETRY, Topology

pytestmark = [pytest.mark.integration, pytest.mark.hosts]

FOLLOW_BOUND_S = 20.0  # README: requests succeed again within this long after the master's host is lost
FAILOVER_BOUND_S = 15.0  # Sentinels: down-after 2 s, then the vote and the promotion


def replica_of(topo: Topology, host: str) -> str | None:
    """The master address the Redis on ``host`` replicates, once its link is up (None otherwise)."""
    import redis

    info = redis.Redis(topo.net.address(host), 6379, socket_timeout=2, retry=NO_RETRY).info("replication")
    if info.get("role") == "slave" and info.get("master_link_status") == "up":
        return str(info["master_host"])
    return None


def test_losing_the_result_backends_master_host_mid_flood(hosts: Topology) -> None:
    topo = hosts
    settings = topo.ops_settings()
    key = api_key(settings)
    ids = [m.match_id for m in store_for(settings).all_matches()]
    # Keys of its own: the matches may have been submitted by an earlier test, and each submission here must be
    # a task of its own whose record the failover could lose.
    flood = Flood(topo, key, async_ids=ids[:3000], sync_ids=ids[-600:-300], own_keys=f"backend-{uuid.uuid4().hex[:6]}")
    master = topo.backend_master()
    assert master == BACKENDS[0], master
    other = BACKENDS[1]

    figures: dict[str, object] = {}
    flood.start()
    try:
        time.sleep(6)
        lost_at = time.monotonic()
        topo.net.cut(master)  # the host is gone: its Redis and its Sentinel with it
        while (now := topo.backend_master()) in (master, None):
            assert time.monotonic() - lost_at < FAILOVER_BOUND_S + 15, "the Sentinels did not fail over"
            time.sleep(0.2)
        figures["failover_s"] = round(time.monotonic() - lost_at, 2)
        figures["new_master"] = now
        # The new master is alone: /ready says its writes are not replicated (degraded, still ready).
        figures["ready_says_alone_s"], _ = wait_ready_says(
            topo, lambda b: b["ready"] and "0 of 1 replicas" in b["degraded"].get("result_backend", ""), timeout=60
        )
        time.sleep(15)  # the flood goes on against the new master
        healed_at = time.monotonic()
        topo.net.heal(master)
        while replica_of(topo, master) != topo.net.address(other):  # the Sentinels make it the new one's replica
            assert time.monotonic() - healed_at < 90, "the old master did not rejoin as a replica"
            time.sleep(0.5)
        figures["old_master_rejoined_s"] = round(time.monotonic() - healed_at, 1)
        figures["ready_clear_s"], _ = wait_ready_says(
            topo, lambda b: "result_backend" not in b["degraded"] and b["ready"], timeout=60
        )
        time.sleep(3)
    finally:
        flood.finish()

    calls = flood.snapshot()
    accepted = {str(c.body["task_id"]): c.match_id for c in calls if c.kind == "async" and c.status == 202 and c.body}

    # Every accepted task ends SUCCESS or DEAD_LETTERED; none answers 404 on the way.
    unknown: set[str] = set()
    with httpx.Client(base_url=topo.api_base("api-2"), headers={"X-API-Key": key}, timeout=30) as client:
        final = poll_terminal(client, list(accepted), 300, TERMINAL, step=1.0, unknown=unknown)
    last = {t: str(final[t]["status"]) for t in final}
    states = Counter(last.get(t, "unknown") for t in accepted)
    sync = [c for c in calls if c.kind == "sync"]
    figures.update(
        {
            "lost_host": master,
            **flood_counts(calls, len(accepted), states),
            "unknown_404": len(unknown),
            "stuck": len(accepted) - states["SUCCESS"] - states["DEAD_LETTERED"],
            "recovery_after_loss_s": recovery_after(calls, lost_at, healed_at),
        }
    )
    report("hosts_backend_master_lost", figures)

    assert set(states) <= {"SUCCESS", "DEAD_LETTERED"}, figures
    assert not unknown, f"{len(unknown)} accepted tasks answered 404 on the way"
    assert figures["others"] == {}, figures["others"]
    for c in calls:
        if c.status not in (200, 202):
            assert c.body is not None and "type" in c.body, c
    assert max(c.seconds for c in sync) <= SYNC_BOUND_S, figures
    assert figures["failover_s"] <= FAILOVER_BOUND_S, figures  # type: ignore[operator]
    assert figures["recovery_after_loss_s"] < FOLLOW_BOUND_S, figures  # type: ignore[operator]
    assert len(accepted) >= 0.8 * figures["async_submitted"], figures  # type: ignore[operator]
