"""Inputs of the capacity model (BENCHMARKS.md, "Scale on paper"), measured on this machine.

For async submissions of stored matches: broker messages per prediction (the depth of ``ml`` after N accepts
with its consumer paused), the bytes of one ``predict_matches`` message (body and headers, read back from the
queue) and of one stored result, Redis commands per prediction (``INFO commandstats`` of a Redis of the run's
own: accept and drain apart), and CPU per prediction of the API (accept) and of the worker (drain); then the
drain rate with 1 and with 2 worker processes, to check the model's scaling against this machine.

    .venv/bin/python benchmarks/bench_capacity.py [--home H] [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis
from kombu import Connection
from load import make_session, submit_all  # benchmarks/ is on the path when run as a script
from stack import Stack, log

from matchcast.tasks.names import ML_QUEUE


def commands(client: redis.Redis) -> dict[str, int]:
    """Redis calls by command so far (``INFO commandstats``)."""
    stats: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def delta(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """Calls per prediction, by command (the ``info`` calls of this script left out)."""
    out = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after if k not in ("info",)}
    return {k: round(v, 3) for k, v in sorted(out.items()) if v > 0}


def cpu_s(stack: Stack, name: str) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    total = 0.0
    for p in stack.procs[name].tree():
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:
            pass
    return total


def sample_message(stack: Stack) -> dict[str, int]:
    """Body and header bytes of one ``predict_matches`` message waiting in ``ml`` (put back afterwards)."""
    with Connection(stack.broker_url()) as conn:
        channel = conn.default_channel
        message = channel.basic_get(ML_QUEUE, no_ack=False)
        assert message is not None, "no message in ml"
        raw_headers = message.properties.get("application_headers") or {}
        body = len(message.body)
        headers = len(json.dumps(raw_headers, default=str))
        items = len(json.loads(message.body)[0][0]["items"])  # protocol 2: [args, kwargs, embed]
        channel.basic_reject(message.delivery_tag, requeue=True)
    return {"body_bytes": body, "header_bytes": headers, "tasks_in_message": items}


def submit(stack: Stack, ids: list[int], concurrency: int = 64) -> list[str]:
    """POST one async submission per match id; the task ids accepted."""
    url = f"http://127.0.0.1:{stack.procs['api'].port}/predict/async/"

    async def run() -> Any:
        async with make_session(concurrency, {"X-API-Key": stack.token}) as session:
            return await submit_all(session, "accept", url, ids, concurrency, lambda m: {"match_id": m})

    done = asyncio.run(run())
    return [r[2]["task_id"] for r in done.results if r[1] is None and r[2]]


def drain(stack: Stack, client: redis.Redis, task_ids: list[str], lane_proc: str) -> dict[str, float]:
    """Resume the paused worker and time until every task has its result; worker CPU meanwhile."""
    cpu0, started = cpu_s(stack, lane_proc), time.monotonic()
    polled = 0  # this script's own EXISTS calls, taken out of the worker's count
    stack.resume()
    while True:
        with client.pipeline(transaction=False) as pipe:
            for t in task_ids[-50:]:
                pipe.exists(f"celery-task-meta-{t}")
            polled += 50
            if all(pipe.execute()):
                break
        time.sleep(0.05)
    while True:
        found = 0
        for i in range(0, len(task_ids), 500):
            found += client.exists(*[f"celery-task-meta-{t}" for t in task_ids[i : i + 500]])
            polled += 1
        if found == len(task_ids):
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    return {
        "probe_exists_calls": polled,
        "drain_s": round(seconds, 3),
        "drain_per_s": round(len(task_ids) / seconds, 1),
        "worker_cpu_ms_per_prediction": round(1000 * (cpu_s(stack, lane_proc) - cpu0) / len(task_ids), 3),
    }


def phase(stack: Stack, client: redis.Redis, concurrency: int, ids: list[int]) -> dict[str, Any]:
    name = f"worker-c{concurrency}"
    proc = stack.start_worker(concurrency=concurrency, lane="bulk", name=name)
    stack.wait_worker(proc, concurrency)
    stack.pause()
    api0, before, t0 = cpu_s(stack, "api"), commands(client), time.monotonic()
    task_ids = submit(stack, ids)
    accept_s = time.monotonic() - t0
    accepted = commands(client)
    depth = stack.ml_depth()
    out: dict[str, Any] = {
        "worker_processes": concurrency,
        "accepted": len(task_ids),
        "accept_per_s": round(len(task_ids) / accept_s, 1),
        "api_cpu_ms_per_accept": round(1000 * (cpu_s(stack, "api") - api0) / len(task_ids), 3),
        "ml_messages": depth,
        "messages_per_prediction": round(depth / len(task_ids), 4),
        "message": sample_message(stack),
        "redis_calls_per_accept": delta(before, accepted, len(task_ids)),
    }
    drained = drain(stack, client, task_ids, name)
    out.update(drained)
    after = commands(client)
    after["exists"] = after.get("exists", 0) - int(out.pop("probe_exists_calls"))
    out["redis_calls_per_prediction_drained"] = delta(accepted, after, len(task_ids))
    out["result_bytes"] = client.strlen(f"celery-task-meta-{task_ids[0]}")
    stack.procs[name].stop()
    log(json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="a home with matches and a champion (reused)")
    parser.add_argument("--n", type=int, default=3000, help="async submissions per phase")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/capacity.json"))
    args = parser.parse_args(argv)
    stack = Stack(home=args.home, backend_aof="everysec")
    try:
        stack.check_services()
        stack.create_vhost()
        stack.start_own_redis()
        stack.prepare_home()
        stack.make_settings()
        stack.create_key()
        api = stack.start_api(1)
        stack.wait_http(api, "/health")
        client = redis.Redis(port=stack.own_redis_port)
        ids = stack.match_ids[-2 * args.n :]
        report = {
            "command": " ".join(sys.argv),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "phases": [phase(stack, client, 1, ids[: args.n]), phase(stack, client, 2, ids[args.n :])],
        }
        one, two = report["phases"]
        report["drain_2_over_1"] = round(two["drain_per_s"] / one["drain_per_s"], 2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
