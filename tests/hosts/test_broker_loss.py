"""Losing a broker node, on hosts of their own: a flood of async submissions and sync requests on both APIs while
the node that leads ``ml`` is SIGKILLed and brought back, then while one node is cut off and healed.

Counted like the fault suite: every task answered 202 must end ``SUCCESS`` or ``DEAD_LETTERED``; duplicates
(at-least-once) are counted and must not change a result; every sync request gets its prediction or a 503/504
with a JSON body, never waits past its timeout; new requests succeed again within ``RECOVERY_BOUND_S``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from matchcast.service.wiring import store_for
from tests.conftest import api_key
from tests.faults.conftest import succeeded_ids
from tests.faults.conftest import wait_terminal as poll_terminal
from tests.faults.test_delivery import REPORT, report
from tests.hosts.topology import APIS, BULK_WORKERS, SYNC_TIMEOUT_S, Topology

pytestmark = [pytest.mark.integration, pytest.mark.hosts]

RECOVERY_BOUND_S = 10.0  # README: requests succeed again within this long after a node dies
PARTITION_RECOVERY_BOUND_S = 30.0  # README: ... and after a node is cut off (found out by heartbeats and ticks)
SLOW_S = 5.0  # an answer slower than this does not count as "succeeding again"
PROBE_EVERY_S = 0.5
SYNC_BOUND_S = SYNC_TIMEOUT_S + 5.0 + 3.0  # the timeout, the sender's grace, and slack for a loaded machine
TERMINAL = frozenset({"SUCCESS", "FAILURE", "DEAD_LETTERED", "REVOKED", "EXPIRED"})


@dataclass
class Call:
    kind: str  # "sync" or "async"
    api: str
    started: float
    seconds: float
    status: int | str  # HTTP status, or the client error's name
    body: dict[str, object] | None
    match_id: int
    probe: bool = False  # sent by the probe: a new request every PROBE_EVERY_S, whatever the others wait for


@dataclass
class Flood:
    """Async submissions (each of a match of its own) and sync requests on every API at once, paced."""

    topo: Topology
    key: str
    async_ids: list[int]
    sync_ids: list[int]
    own_keys: str | None = None  # a prefix: each async submission gets an Idempotency-Key of its own (a new task)
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._next_async = iter(self.async_ids)
        self._lock = threading.Lock()

    def _take(self) -> int | None:
        with self._lock:
            return next(self._next_async, None)

    def _call(self, client: httpx.Client, kind: str, api: str, match_id: int, probe: bool = False) -> None:
        t0 = time.monotonic()
        try:
            headers = {"Idempotency-Key": f"{self.own_keys}-{match_id}"} if self.own_keys else {}
            r = (
                client.post("/predict/async/", json={"match_id": match_id}, headers=headers)
                if kind == "async"
                else client.get(f"/predict/{match_id}")
            )
            status: int | str = r.status_code
            try:
                body = r.json()
            except ValueError:
                body = None
        except httpx.HTTPError as exc:
            status, body = type(exc).__name__, None
        with self._lock:
            self.calls.append(Call(kind, api, t0, time.monotonic() - t0, status, body, match_id, probe))

    def _client(self, api: str) -> httpx.Client:
        return httpx.Client(base_url=self.topo.api_base(api), headers={"X-API-Key": self.key}, timeout=60)

    def _run(self, kind: str, api: str, pause: float) -> None:
        with self._client(api) as client:
            sync_ids = itertools.cycle(self.sync_ids)
            while not self.stop.is_set():
                match_id = self._take() if kind == "async" else next(sync_ids)
                if match_id is None:
                    return
                self._call(client, kind, api, match_id)
                self.stop.wait(pause)

    def _probe(self) -> None:
        """A sync request and an async submission on each API every PROBE_EVERY_S, each in a thread of its own:
        what a new caller meets at that moment, however long earlier ones wait."""
        clients = {api: self._client(api) for api in APIS}
        sync_ids = itertools.cycle(self.sync_ids)
        with ThreadPoolExecutor(max_workers=64) as pool:
            while not self.stop.wait(PROBE_EVERY_S):
                for api in APIS:
                    pool.submit(self._call, clients[api], "sync", api, next(sync_ids), True)
                    match_id = self._take()
                    if match_id is not None:
                        pool.submit(self._call, clients[api], "async", api, match_id, True)
        for c in clients.values():
            c.close()

    def start(self) -> None:
        for api in APIS:
            for kind, pause in (("async", 0.05), ("sync", 0.1), ("sync", 0.1)):
                t = threading.Thread(target=self._run, args=(kind, api, pause), daemon=True)
                t.start()
                self.threads.append(t)
        probe = threading.Thread(target=self._probe, daemon=True)
        probe.start()
        self.threads.append(probe)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(SYNC_BOUND_S + 30)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)


def recovery_after(calls: list[Call], since: float, until: float) -> float:
    """Seconds from ``since`` until new requests succeed again: the start of the first probe request after the
    last one, started in ``[since, until)``, that failed or took over ``SLOW_S``; ``0`` if none did."""
    probes = [c for c in calls if c.probe and since <= c.started < until]
    bad = [c.started for c in probes if not ok(c)]
    if not bad:
        return 0.0
    after = [c.started for c in probes if c.started > max(bad)]
    return round((min(after) if after else until) - since, 2)


def ok(c: Call) -> bool:
    return c.status in (200, 202) and c.seconds <= SLOW_S


def ml_leader(topo: Topology, via: str | None = None) -> str:
    """The host whose node leads the ``ml`` quorum queue."""
    node = next(b for b in topo.brokers if via is None or b.host == via)
    queues = json.loads(node.ctl("list_queues", "name", "leader", "--formatter", "json"))
    leader = next(q["leader"] for q in queues if q["name"] == "ml")
    return str(leader).split("@", 1)[1]


def ready(topo: Topology, api: str = "api-1") -> dict[str, Any]:
    r = httpx.get(f"{topo.api_base(api)}/ready", timeout=10)
    body: dict[str, Any] = r.json()
    return body


def broker_view(topo: Topology) -> str:
    """What each node says of the lanes' queues and their consumers (for a failure's message)."""
    out = []
    for b in topo.brokers:
        try:
            quiet = ("--no-table-headers", "--quiet")
            queues = b.ctl("list_queues", "name", "consumers", "leader", *quiet, timeout=15)
            consumers = b.ctl("list_consumers", "queue_name", "channel_pid", *quiet, timeout=15)
            out.append(f"{b.host} queues:\n{queues}{b.host} consumers:\n{consumers}")
        except (AssertionError, subprocess.SubprocessError) as exc:
            out.append(f"{b.host}: {exc}")
    return "\n".join(out)


def wait_ready_says(
    topo: Topology, pred: Callable[[dict[str, Any]], bool], timeout: float
) -> tuple[float, dict[str, Any]]:
    """Poll ``/ready`` until ``pred(body)``; the seconds it took and the body."""
    t0 = time.monotonic()
    body: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = ready(topo)
            if pred(body):
                return round(time.monotonic() - t0, 2), body
        time.sleep(0.5)
    raise AssertionError(f"/ready did not say so within {timeout} s: {body}\n{broker_view(topo)}")


def names(host: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a ``/ready`` body names ``host``'s broker node as unreachable."""
    return lambda body: any(k.startswith(f"broker {host}:") for k in body["degraded"])


def queue_depth_metric(topo: Topology, api: str = "api-1") -> float:
    text = httpx.get(f"{topo.api_base(api)}/metrics", timeout=10).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("queue_depth ")))


def node_up_metric(topo: Topology, api: str = "api-1") -> dict[str, float]:
    """``broker_node_up`` by node, as an API exports it (set by its last ``/ready``)."""
    text = httpx.get(f"{topo.api_base(api)}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("broker_node_up{")]
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in lines}


def wait_terminal(topo: Topology, key: str, task_ids: list[str], timeout: float) -> dict[str, dict[str, object]]:
    """Poll every task's status (through api-1) until all are terminal or time runs out."""
    with httpx.Client(base_url=topo.api_base("api-1"), headers={"X-API-Key": key}, timeout=30) as client:
        return poll_terminal(client, task_ids, timeout, TERMINAL, step=1.0)


def flood_counts(calls: list[Call], accepted: int, states: Counter[str]) -> dict[str, object]:
    """What every flood reports: submitted, accepted and refused, how the sync requests were answered, how the
    accepted tasks ended, and any answer of another status (``others``)."""
    by_status = Counter((c.kind, c.status) for c in calls)
    sync = [c for c in calls if c.kind == "sync"]
    return {
        "async_submitted": sum(1 for c in calls if c.kind == "async"),
        "accepted": accepted,
        "async_refused_503": by_status[("async", 503)],
        "sync_requests": len(sync),
        "sync_200": by_status[("sync", 200)],
        "sync_503": by_status[("sync", 503)],
        "sync_504": by_status[("sync", 504)],
        "sync_slowest_s": round(max(c.seconds for c in sync), 2),
        "states": dict(states),
        "completed": states["SUCCESS"],
        "others": dict(Counter((c.kind, c.status) for c in calls if c.status not in (200, 202, 503, 504))),
    }


def settled_prediction(client: httpx.Client, match_id: int, within_s: float = 60) -> dict[str, Any]:
    """A sync prediction once the API answers one: just after a heal it may still say 503 for a moment."""
    deadline = time.monotonic() + within_s
    answers = []
    while time.monotonic() < deadline:
        r = client.get(f"/predict/{match_id}")
        if r.status_code == 200:
            return dict(r.json())
        answers.append((r.status_code, r.text[:200]))
        time.sleep(1)
    raise AssertionError(f"no prediction of match {match_id} within {within_s} s: {answers}")


def test_losing_a_broker_node_mid_flood(hosts: Topology) -> None:
    topo = hosts
    settings = topo.ops_settings()
    key = api_key(settings)
    ids = [m.match_id for m in store_for(settings).all_matches()]
    flood = Flood(topo, key, async_ids=ids[:3000], sync_ids=ids[-300:])

    members = json.loads(topo.brokers[0].ctl("list_queues", "name", "type", "members", "--formatter", "json"))
    kinds = {q["name"]: (q["type"], len(q["members"])) for q in members}
    for name in ("ml", "ml.interactive", "ml.bulk", "ml.dead"):
        assert kinds[name] == ("quorum", 3), kinds  # replicated on all three nodes

    figures: dict[str, object] = {}
    flood.start()
    try:
        time.sleep(6)
        # 1. SIGKILL the Erlang VM of the node that leads ``ml``.
        leader = ml_leader(topo)
        node = next(b for b in topo.brokers if b.host == leader)
        killed_at = time.monotonic()
        node.kill_vm()
        figures["ready_names_lost_node_s"], _ = wait_ready_says(topo, names(leader), timeout=15)
        # Ready again (the workers consume through the other nodes) while it still names the lost node.
        figures["ready_again_after_kill_s"], body = wait_ready_says(
            topo, lambda b: b["ready"] is True and names(leader)(b), timeout=RECOVERY_BOUND_S
        )
        assert str(body["checks"]["broker"]).startswith("ok") and "2 of 3 nodes" in str(body["checks"]["broker"])  # type: ignore[index]
        time.sleep(15)
        depth_during = queue_depth_metric(topo)
        # What the alerts read: the lost node is down in broker_node_up (MatchcastBrokerNodeDown), the others up.
        node_up = node_up_metric(topo)
        figures["broker_node_up_during_loss"] = node_up
        assert [v for k, v in node_up.items() if k.startswith(f"{leader}:")] == [0.0], node_up
        assert sorted(v for k, v in node_up.items() if not k.startswith(f"{leader}:")) == [1.0, 1.0], node_up
        others = [b.host for b in topo.brokers if b.host != leader]
        figures["new_leader"] = ml_leader(topo, via=others[0])
        # 2. Bring it back.
        back_started = time.monotonic()
        node.start(wait=True)
        topo.wait_cluster(3, via=topo.brokers.index(next(b for b in topo.brokers if b.host == others[0])))
        figures["node_back_s"] = round(time.monotonic() - back_started, 1)
        back_s, _ = wait_ready_says(
            topo, lambda b: b["ready"] and not any(k.startswith("broker ") for k in b["degraded"]), 30
        )
        time.sleep(8)
        # 3. Cut the node most clients are connected to off from the others (and from those clients), then heal.
        cut = topo.busiest_broker()
        cut_at = time.monotonic()
        topo.net.cut(cut)
        figures["ready_names_cut_node_s"], _ = wait_ready_says(topo, names(cut), timeout=20)
        time.sleep(25)
        healed_at = time.monotonic()
        topo.net.heal(cut)
        topo.wait_cluster(3, via=topo.brokers.index(next(b for b in topo.brokers if b.host != cut)), timeout=180)
        figures["partition_healed_s"] = round(time.monotonic() - healed_at, 1)
        # Whole again: every node reachable, both lanes consumed (the body says what lacks if not).
        figures["ready_clear_after_heal_s"], _ = wait_ready_says(
            topo, lambda b: b["ready"] and not any(k.startswith("broker ") for k in b["degraded"]), 60
        )
        time.sleep(8)
    finally:
        flood.finish()
    end = time.monotonic()

    calls = flood.snapshot()
    accepted = {str(c.body["task_id"]): c.match_id for c in calls if c.kind == "async" and c.status == 202 and c.body}
    final = wait_terminal(topo, key, list(accepted), timeout=180)
    states = Counter(str(final.get(t, {}).get("status", "LOST")) for t in accepted)
    print(f"\n[hosts] flood over: {figures}, tasks {dict(states)}")  # in the log even if a later step fails
    lost = len(accepted) - states["SUCCESS"] - states["DEAD_LETTERED"]

    # At-least-once: a task computed twice (a worker lost its node before its ack reached the broker).
    runs = Counter(t for w in BULK_WORKERS for t in succeeded_ids(topo.workers[w].log) if t in accepted)
    duplicates = [t for t, n in runs.items() if n > 1]
    same = 0
    with httpx.Client(base_url=topo.api_base("api-2"), headers={"X-API-Key": key}, timeout=60) as client:
        for t in duplicates[:20]:  # a duplicate changes no result: it equals a fresh prediction of its match
            fresh = settled_prediction(client, accepted[t])
            stored = final[t]["result"]
            # The same model on the same features: equal but for the last bit (a batch's and one row's float sums).
            assert isinstance(stored, dict), stored
            assert stored["probabilities"] == pytest.approx(fresh["probabilities"], rel=1e-12), (stored, fresh)
            same += 1

    sync = [c for c in calls if c.kind == "sync"]
    figures.update(
        {
            "killed": leader,
            "cut": cut,
            "flood_s": round(end - (killed_at - 6), 1),
            **flood_counts(calls, len(accepted), states),
            "lost": lost,
            "duplicates": len(duplicates),
            "duplicates_checked_same": same,
            "recovery_after_kill_s": recovery_after(calls, killed_at, back_started),
            "recovery_after_cut_s": recovery_after(calls, cut_at, healed_at),
            "ready_clear_after_back_s": back_s,
            "queue_depth_during_loss": depth_during,
        }
    )
    report("hosts_broker_node_lost", figures)
    timeline = [
        (c.kind, c.api, c.probe, round(c.started - killed_at, 2), round(c.seconds, 2), c.status)
        + ((str(c.body.get("detail"))[:160],) if c.body and c.status not in (200, 202) else ())
        for c in calls
    ]
    marks = {"cut_at": round(cut_at - killed_at, 2), "back_at": round(back_started - killed_at, 2)}
    REPORT.with_name("hosts-calls.json").write_text(json.dumps({**marks, "calls": timeline}))

    # Nothing accepted is lost; every answer is a prediction, a 202, or a refusal with a JSON body naming it.
    assert lost == 0, states
    assert figures["others"] == {}, figures["others"]
    for c in calls:
        if c.status not in (200, 202):
            assert c.body is not None and "type" in c.body, c
    assert max(c.seconds for c in sync) <= SYNC_BOUND_S, figures
    assert figures["recovery_after_kill_s"] < RECOVERY_BOUND_S, figures  # type: ignore[operator]
    assert figures["recovery_after_cut_s"] < PARTITION_RECOVERY_BOUND_S, figures  # type: ignore[operator]
    assert len(accepted) >= 0.9 * figures["async_submitted"], figures  # type: ignore[operator]
    assert depth_during >= 0
