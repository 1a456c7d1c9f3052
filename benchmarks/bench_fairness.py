"""Fair share between API keys on the bulk lane, and what server-sent event streams cost (issue 16), in one run.

    .venv/bin/python benchmarks/bench_fairness.py [--quick] [--backlog N] [--broker rabbitmq|redis] [--phases ...]

Starts its own stack (a temp home with every bundled match and a trained champion, a RabbitMQ vhost, or the Redis
broker as the embedded default runs, a Redis database, one ``matchcast worker --lane bulk`` of two processes,
one ``matchcast api``) and measures:

- **fairness**, with fair share on and then off (``MATCHCAST_FAIR_SHARE``, the API restarted in between, the same
  worker): key B's batch of 100 alone on the idle system (three times, the median); key A's backlog of
  ``--backlog`` predictions (batches of 1,000, queued while the bulk lane holds off its queues, then released)
  drained alone; and the same backlog with B's batch of 100 sent one second after the release (``--rounds`` of
  both, alternating). Times are the batches' own ``finished_at`` less the moment of release or submission.
  Figures: B's time with A's backlog (median) against B idle (target <= 3x with fair share), A's throughput with B
  against A alone (best rounds).
- **sse**: ``--streams`` real HTTP event streams (httpx) opened on the batches of a backlog; the API's RSS before
  and after they are open (memory per open stream), and the API's CPU time while a worker drains the batches with
  the streams open, less the same drain with none open, per 1,000 events sent (``sse_events_total``).

Writes ``benchmarks/results/fairness.json`` and prints the figures. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from stack import BENCH_DIR, Stack, log, sigterm_as_interrupt

from matchcast.service.auth import key_service_for
from matchcast.tasks.names import BULK_QUEUE, BULK_SHARD_QUEUES, ML_QUEUE

BULK_QUEUES = (ML_QUEUE, BULK_QUEUE, *BULK_SHARD_QUEUES)
BATCH = 1000
# Streams opened at once: each opening reads the batch (two round trips) through the API process's Redis pool of
# 100 connections (redis-py's default), which raises when it runs dry; a wave at a time keeps the openings apart.
OPEN_WAVE = 25


def finished_at(body: dict[str, Any]) -> float:
    return datetime.fromisoformat(body["finished_at"]).timestamp()


class Bench:
    """One run: the stack, two keys, and the figures."""

    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack, self.args = stack, args
        self.report: dict[str, Any] = {"backlog": args.backlog, "broker": args.broker}
        assert stack.settings is not None
        keys = key_service_for(stack.settings)
        self.a = {"X-API-Key": keys.create("predict", name="bench A")[1]}
        self.b = {"X-API-Key": keys.create("predict", name="bench B")[1]}
        self.ids = stack.match_ids[-BATCH:]
        self.http: httpx.Client | None = None

    # -- stack --------------------------------------------------------------------------------------------------
    def restart_api(self, **settings: Any) -> None:
        """(Re)start ``matchcast api`` with these settings changed."""
        stack = self.stack
        if "api" in stack.procs:
            stack.procs["api"].stop()
        assert stack.settings is not None
        base = stack.settings
        stack.settings = base.model_copy(update=settings)
        try:
            api = stack.start_api()
        finally:
            stack.settings = base
        stack.wait_http(api, "/health")
        if self.http is not None:
            self.http.close()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=60)

    def hold(self) -> None:
        for q in BULK_QUEUES:
            self.stack.pause(q)

    def release(self) -> float:
        at = time.time()
        for q in BULK_QUEUES:
            self.stack.resume(q)
        return at

    # -- requests -----------------------------------------------------------------------------------------------
    def submit(self, key: dict[str, str], ids: list[int]) -> str:
        assert self.http is not None
        r = self.http.post("/predict/async/batch", json={"match_ids": ids}, headers=key)
        assert r.status_code == 202, r.text
        url: str = r.json()["status_url"]
        return url

    def wait_done(self, key: dict[str, str], url: str, timeout: float = 900) -> dict[str, Any]:
        assert self.http is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body: dict[str, Any] = self.http.get(url, params={"limit": 0}, headers=key).json()
            if body["status"] == "DONE":
                return body
            time.sleep(0.02)
        raise RuntimeError(f"{url} not done within {timeout:.0f} s")

    def backlog_of_a(self) -> list[str]:
        n = self.args.backlog // BATCH
        return [self.submit(self.a, self.ids) for _ in range(n)]

    # -- fairness -----------------------------------------------------------------------------------------------
    def b_idle(self) -> float:
        times = []
        for _ in range(3):
            sent = time.time()
            url = self.submit(self.b, self.ids[:100])
            times.append(finished_at(self.wait_done(self.b, url)) - sent)
            time.sleep(0.3)
        return statistics.median(times)

    def a_drain(self, with_b: bool) -> dict[str, float]:
        self.hold()
        urls = self.backlog_of_a()
        released = self.release()
        out: dict[str, float] = {}
        if with_b:
            time.sleep(1.0)
            sent = time.time()
            b_url = self.submit(self.b, self.ids[:100])
            b_done = self.wait_done(self.b, b_url)
            out["b_s"] = finished_at(b_done) - sent
        ends = [finished_at(self.wait_done(self.a, u)) for u in urls]
        out["a_drain_s"] = max(ends) - released
        out["a_per_s"] = len(urls) * BATCH / out["a_drain_s"]
        return out

    def fairness(self) -> None:
        for mode, on in (("fair_share", True), ("plain_ml_bulk", False)):
            self.restart_api(fair_share=on, max_backlog=10**6)
            log(f"fairness, {mode}: B alone ...")
            fig: dict[str, Any] = {"b_idle_s": self.b_idle(), "rounds": []}
            log(f"  B alone {fig['b_idle_s'] * 1000:.0f} ms")
            for r in range(self.args.rounds):  # alternating, so that the machine's drift hits both alike
                alone = self.a_drain(with_b=False)
                both = self.a_drain(with_b=True)
                fig["rounds"].append({"a_alone_per_s": alone["a_per_s"], "a_with_b_per_s": both["a_per_s"], **both})
                log(
                    f"  round {r + 1}: A alone {alone['a_per_s']:.0f}/s, with B {both['a_per_s']:.0f}/s;"
                    f" B with A's backlog {both['b_s'] * 1000:.0f} ms"
                )
            rounds = fig["rounds"]
            fig["a_alone_per_s"] = max(x["a_alone_per_s"] for x in rounds)
            fig["a_with_b_per_s"] = max(x["a_with_b_per_s"] for x in rounds)
            fig["b_with_a_s"] = statistics.median(x["b_s"] for x in rounds)
            fig["b_ratio"] = fig["b_with_a_s"] / fig["b_idle_s"]
            fig["a_ratio"] = fig["a_with_b_per_s"] / fig["a_alone_per_s"]
            fig["b_share_of_work"] = 100 / (self.args.backlog + 100)
            log(f"  {mode}: B {fig['b_ratio']:.1f}x idle; A with B {fig['a_ratio']:.3f}x alone (best rounds)")
            self.report[mode] = fig

    # -- sse ----------------------------------------------------------------------------------------------------
    def api_process(self) -> psutil.Process:
        return psutil.Process(self.stack.procs["api"].pid)

    def sse_events(self) -> float:
        assert self.http is not None
        text = self.http.get("/metrics").text
        return sum(float(v) for v in re.findall(r'^sse_events_total\{kind="\w+"\} (\S+)$', text, re.M))

    async def streams_drain(self, urls: list[str], n: int) -> dict[str, float]:
        """Open ``n`` streams over the batches at ``urls`` (queued, held), then release them; API CPU and RSS."""
        assert self.http is not None
        api = self.api_process()
        base = str(self.http.base_url)
        limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
        out: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=base, headers=self.a, timeout=600, limits=limits) as client:
            opened = asyncio.Event()
            first: list[int] = []

            async def follow(url: str) -> int:
                events = 0
                async with client.stream("GET", f"{url}/events") as response:
                    assert response.status_code == 200, await response.aread()
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            events += 1
                            if events == 1:
                                first.append(1)
                                if len(first) == n:
                                    opened.set()
                            if line == "event: end":
                                return events
                return events

            await asyncio.sleep(1.0)
            rss0 = api.memory_info().rss
            tasks: list[asyncio.Task[int]] = []
            for wave in range(0, n, OPEN_WAVE):  # a wave at a time: see OPEN_WAVE
                tasks += [
                    asyncio.create_task(follow(urls[i % len(urls)])) for i in range(wave, min(n, wave + OPEN_WAVE))
                ]
                while len(first) < len(tasks) and not any(t.done() for t in tasks):
                    await asyncio.sleep(0.05)
            if n:
                await asyncio.wait_for(opened.wait(), 120)
                await asyncio.sleep(1.0)
            out["rss_open_mb"] = (api.memory_info().rss - rss0) / 2**20
            events0, cpu0 = self.sse_events(), sum(api.cpu_times()[:2])
            started = await asyncio.to_thread(self.release)
            for u in urls:
                await asyncio.to_thread(self.wait_done, self.a, u)
            out["drain_s"] = time.time() - started
            await asyncio.gather(*tasks)
            out["api_cpu_s"] = sum(api.cpu_times()[:2]) - cpu0
            out["events"] = self.sse_events() - events0
        return out

    def sse(self) -> None:
        self.restart_api(fair_share=True, max_backlog=10**6, sse_streams_per_key=10000)
        n, batches = self.args.streams, max(1, self.args.sse_backlog // BATCH)
        runs: dict[str, dict[str, float]] = {}
        for label, streams in (("none", 0), ("streams", n), ("none_again", 0), ("streams_again", n)):
            self.hold()
            urls = [self.submit(self.a, self.ids) for _ in range(batches)]
            log(f"sse: {streams} streams over {batches} batches of {BATCH} ...")
            runs[label] = asyncio.run(self.streams_drain(urls, streams))
            log(f"  {runs[label]}")
        base = min(runs["none"]["api_cpu_s"], runs["none_again"]["api_cpu_s"])
        best = min((runs["streams"], runs["streams_again"]), key=lambda r: r["api_cpu_s"])
        self.report["sse"] = {
            "streams": n,
            "runs": runs,
            "cpu_ms_per_1000_events": (best["api_cpu_s"] - base) / best["events"] * 1e6 if best["events"] else None,
            "rss_kb_per_stream": max(runs["streams"]["rss_open_mb"], runs["streams_again"]["rss_open_mb"]) * 1024 / n,
        }
        log(
            f"sse: {self.report['sse']['cpu_ms_per_1000_events']:.1f} ms CPU per 1,000 events, "
            f"{self.report['sse']['rss_kb_per_stream']:.1f} KiB per open stream"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="A's backlog 10,000, 100 streams")
    p.add_argument("--backlog", type=int, default=50000, help="key A's queued predictions (batches of 1,000)")
    p.add_argument("--broker", choices=("rabbitmq", "redis"), default="rabbitmq")
    p.add_argument("--rounds", type=int, default=2, help="A alone / A with B, alternating (fairness)")
    p.add_argument("--phases", nargs="+", choices=("fairness", "sse"), default=["fairness", "sse"])
    p.add_argument("--streams", type=int, default=500, help="event streams open at once (sse)")
    p.add_argument("--sse-backlog", type=int, default=10000, help="predictions the streams follow (sse)")
    p.add_argument("--home", type=Path, help="a trained home to reuse")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "fairness.json")
    args = p.parse_args()
    if args.quick:
        args.backlog, args.streams, args.sse_backlog = min(args.backlog, 10000), min(args.streams, 100), 5000
    command = " ".join([".venv/bin/python", "benchmarks/bench_fairness.py", *sys.argv[1:]])
    stack = Stack(home=args.home, keep=args.keep)
    rc = 0
    with sigterm_as_interrupt():
        try:
            stack.check_services()
            stack.take_redis_db()
            if args.broker == "rabbitmq":
                stack.create_vhost()
            stack.prepare_home()
            if args.broker == "redis":  # the embedded default's broker: lists in the run's Redis database
                stack.broker_url = stack.backend_url  # type: ignore[method-assign]
            stack.make_settings()
            bench = Bench(stack, args)
            worker = stack.start_worker(concurrency=2, lane="bulk")
            stack.wait_worker(worker, 2)
            bench.report["command"] = command
            args.out.parent.mkdir(parents=True, exist_ok=True)
            for phase in args.phases:  # the report is written after each phase: a later failure keeps it
                getattr(bench, phase)()
                args.out.write_text(json.dumps(bench.report, indent=2))
            print(json.dumps(bench.report, indent=2))
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            rc = 130
        except Exception:
            traceback.print_exc()
            for proc in stack.procs.values():
                log(f"--- {proc.name} log tail ---\n{proc.tail(1500)}")
            rc = 1
        finally:
            with contextlib.suppress(Exception):
                stack.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
