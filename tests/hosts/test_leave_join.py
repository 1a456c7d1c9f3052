"""Leaving and joining, on hosts of their own: mid-flood (async submissions and sync requests on both APIs), the bulk
worker on ``worker-2`` is told to stop (SIGTERM to its main process, as systemd's ``KillMode=mixed`` and
``docker stop`` send it), and a worker on a host that was not in the system, ``worker-4``, joins with nothing but
its environment.

The promise (README, "Leaving and joining"): the stopped worker drains and exits within its grace period and the
10 s after it; every task answered 202 ends ``SUCCESS`` (none lost, none left half done; a task run twice changes no
result); the joining worker completes its first task within ``JOIN_BOUND_S`` of its start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter

import httpx
import psutil
import pytest

from matchcast.service.wiring import store_for
from tests.conftest import api_key
from tests.faults.conftest import succeeded_ids
from tests.faults.test_delivery import report
from tests.hosts.services import Proc
from tests.hosts.test_broker_loss import SYNC_BOUND_S, Flood, flood_counts, settled_prediction, wait_terminal
from tests.hosts.topology import JOINING_WORKER, Topology

pytestmark = [pytest.mark.integration, pytest.mark.hosts]

GRACE_S = 20.0  # MATCHCAST_WORKER_SHUTDOWN_GRACE_S (the default: the hosts set none)
EXIT_BOUND_S = GRACE_S + 10.0 + 10.0  # README: the grace, the 10 s after SIGQUIT, slack for 2 loaded cores
# Process start to its first task completed, on 2 shared cores under the flood (tests/faults/test_drain.py: 5 s on
# a quiet machine, 17 to 29 s at a load average of 19).
JOIN_BOUND_S = 60.0


def main_process(p: Proc) -> psutil.Process:
    """The worker's own (Celery main) process: the one ``ip netns exec`` and ``env`` became."""
    assert p.proc is not None
    proc = psutil.Process(p.proc.pid)
    while "python" not in proc.name() and proc.children():
        proc = proc.children()[0]
    return proc


def exit_within(p: Proc, main: psutil.Process, timeout: float, since: float) -> float | None:
    """Seconds from ``since`` until the worker's main process has exited (None if not within ``timeout``)."""
    assert p.proc is not None
    try:
        if main.pid == p.proc.pid:  # our child: reaped by its Popen
            p.proc.wait(timeout)
        else:
            main.wait(timeout)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return None
    return round(time.monotonic() - since, 2)


def seconds_until(p: Proc, pattern: str, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until ``p``'s log matches ``pattern`` (None past ``timeout``)."""
    while time.monotonic() < since + timeout:
        if re.search(pattern, p.text()):
            return round(time.monotonic() - since, 2)
        time.sleep(0.1)
    return None


def test_a_worker_host_leaves_and_another_joins_mid_flood(hosts: Topology) -> None:
    topo = hosts
    settings = topo.ops_settings()
    key = api_key(settings)
    ids = [m.match_id for m in store_for(settings).all_matches()]
    flood = Flood(topo, key, async_ids=ids[:3000], sync_ids=ids[-600:-300], own_keys=f"leave-{uuid.uuid4().hex[:6]}")
    leaving = topo.workers["worker-2"]
    figures: dict[str, object] = {}
    flood.start()
    try:
        time.sleep(6)
        assert succeeded_ids(leaving.log), "the worker to stop had taken no work before it was told to"
        main = main_process(leaving)
        stopped_at = time.monotonic()
        os.kill(main.pid, signal.SIGTERM)
        figures["drain_started_s"] = seconds_until(leaving, r"drain_started pid=", stopped_at, 15)
        figures["leave_exit_s"] = exit_within(leaving, main, EXIT_BOUND_S + 20, stopped_at)
        time.sleep(3)  # one worker left: the flood goes on
        joined_at = time.monotonic()
        joining = topo.start_worker(JOINING_WORKER, "bulk")
        figures["join_first_task_s"] = seconds_until(joining, r"predicted chunk=\S+ tasks=\S", joined_at, 120)
        time.sleep(8)  # both take the flood
    finally:
        flood.finish()

    calls = flood.snapshot()
    accepted = {str(c.body["task_id"]): c.match_id for c in calls if c.kind == "async" and c.status == 202 and c.body}
    final = wait_terminal(topo, key, list(accepted), timeout=180)
    states = Counter(str(final.get(t, {}).get("status", "LOST")) for t in accepted)
    workers = ("worker-1", "worker-2", JOINING_WORKER)
    ran = {w: [t for t in succeeded_ids(topo.workers[w].log) if t in accepted] for w in workers}
    runs = Counter(t for w in workers for t in ran[w])
    duplicates = [t for t, n in runs.items() if n > 1]
    with httpx.Client(base_url=topo.api_base("api-1"), headers={"X-API-Key": key}, timeout=60) as client:
        for t in duplicates[:20]:  # a task run twice changes no result: it equals a fresh prediction of its match
            stored = final[t]["result"]
            assert isinstance(stored, dict), stored
            fresh = settled_prediction(client, accepted[t])
            assert stored["probabilities"] == pytest.approx(fresh["probabilities"], rel=1e-12), (stored, fresh)
    figures.update(
        {
            **flood_counts(calls, len(accepted), states),
            "tasks_by_worker": {w: len(ran[w]) for w in workers},
            "duplicates": len(duplicates),
        }
    )
    report("hosts_worker_leaves_and_joins", figures)

    assert figures["drain_started_s"] is not None, leaving.text()[-3000:]
    assert figures["leave_exit_s"] is not None, f"still running {EXIT_BOUND_S + 20} s after SIGTERM"
    assert figures["leave_exit_s"] <= EXIT_BOUND_S, figures  # type: ignore[operator]
    assert "Unrecoverable error" not in leaving.text(), leaving.text()[-3000:]
    assert figures["join_first_task_s"] is not None, topo.workers[JOINING_WORKER].text()[-3000:]
    assert figures["join_first_task_s"] <= JOIN_BOUND_S, figures  # type: ignore[operator]
    assert ran[JOINING_WORKER], figures
    # Nothing accepted is lost or left half done: every task ends SUCCESS, its result stored.
    assert set(states) == {"SUCCESS"}, states
    assert all(isinstance(final[t].get("result"), dict) for t in accepted)
    assert figures["others"] == {}, figures["others"]
    for c in calls:
        if c.status not in (200, 202):
            assert c.body is not None and "type" in c.body, c
    assert max(c.seconds for c in calls if c.kind == "sync") <= SYNC_BOUND_S, figures
    assert len(accepted) >= 0.9 * figures["async_submitted"], figures  # type: ignore[operator]
