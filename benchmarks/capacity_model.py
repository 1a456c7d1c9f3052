"""The capacity model of BENCHMARKS.md ("Scale on paper"), computed from measured inputs.

Reads ``benchmarks/results/latest.json`` (the last full serving run: CPU per sync prediction per process kind)
and ``benchmarks/results/capacity.json`` (``bench_capacity.py``: async costs, messages, bytes, Redis calls) and
prints the hosts of each kind for 10k, 100k and 1M predictions per second, sync and async.

    .venv/bin/python benchmarks/capacity_model.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CORES_PER_HOST = 16  # assumption: hosts of 16 cores as fast as this machine's, run at most at
UTILISATION = 0.6  # of their CPU (headroom for bursts, a host lost, GC and the OS)
SYNC_GROUP = 64  # assumption: requests per sync group under load (the c64 run's grouping; groups grow with load)
REDIS_OPS_PER_CORE = 400_000  # assumption: pipelined simple commands one Redis core sustains
REDIS_BYTES_PER_S = 500e6  # assumption: written bytes one Redis process sustains (values of ~2.5 kB)
QUEUE_MSGS_PER_S = 20_000  # assumption: persistent, confirmed messages one quorum queue's leader sustains
RATES = (10_000, 100_000, 1_000_000)


def hosts(rate: float, cpu_ms: float) -> int:
    """Hosts of ``CORES_PER_HOST`` cores for ``rate`` predictions/s at ``cpu_ms`` CPU ms each."""
    return max(1, math.ceil(rate * cpu_ms / 1000 / (CORES_PER_HOST * UTILISATION)))


def main() -> None:
    latest = json.loads((RESULTS / "latest.json").read_text())
    capacity = json.loads((RESULTS / "capacity.json").read_text())
    sync_cpu = {k: v["ms_per_ok"] for k, v in latest["sync"]["matchcast"]["256"]["extra"]["cpu"].items()}
    two = capacity["phases"][-1]
    per_msg = two["messages_per_prediction"]
    result_bytes = two["result_bytes"]
    redis_calls = sum(two["redis_calls_per_accept"].values()) + sum(two["redis_calls_per_prediction_drained"].values())
    msg_bytes = two["message"]["body_bytes"] + two["message"]["header_bytes"]
    print(f"inputs: sync CPU ms per prediction (c256) {sync_cpu}")
    print(
        f"inputs: async API {two['api_cpu_ms_per_accept']} ms/accept, worker "
        f"{two['worker_cpu_ms_per_prediction']} ms/prediction, {per_msg} messages/prediction of {msg_bytes} bytes, "
        f"{redis_calls:.2f} Redis calls/prediction, result {result_bytes} bytes"
    )
    print("| rate/s | mode | API hosts | worker hosts | broker msgs/s (queues) | Redis calls/s | Redis writes/s |")
    for rate in RATES:
        for mode in ("sync", "async"):
            if mode == "sync":
                api, worker = hosts(rate, sync_cpu["api"]), hosts(rate, sync_cpu["worker"])
                msgs = rate / SYNC_GROUP
                calls = 4 * msgs  # STARTED and SUCCESS: a SET and a PUBLISH each, per group
                written = rate * result_bytes
            else:
                api = hosts(rate, two["api_cpu_ms_per_accept"])
                worker = hosts(rate, two["worker_cpu_ms_per_prediction"])
                msgs = rate * per_msg
                calls = rate * redis_calls
                written = rate * result_bytes
            redis_by_ops = math.ceil(calls / REDIS_OPS_PER_CORE)
            redis_by_bytes = math.ceil(written / REDIS_BYTES_PER_S)
            queues = math.ceil(msgs / QUEUE_MSGS_PER_S)
            print(
                f"| {rate:,} | {mode} | {api} | {worker} | {msgs:,.0f} ({queues} queue) | {calls:,.0f} "
                f"({redis_by_ops} Redis) | {written / 1e6:,.0f} MB ({redis_by_bytes} Redis) |"
            )
    kept = 10_000 * result_bytes * 86_400 / 1e12
    print(f"results kept 24 h: {result_bytes} B x rate x 86,400 s = {kept:.1f} TB at 10k/s")


if __name__ == "__main__":
    main()
