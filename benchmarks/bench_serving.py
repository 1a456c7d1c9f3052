"""Throughput and latency of matchcast's serving paths (issue 5), side by side in one run.

    .venv/bin/python benchmarks/bench_serving.py [--quick] [--soak SECONDS] [--profile]

Starts its own stack (a temp home with every bundled match and a trained champion, a RabbitMQ vhost and a Redis
database of its own, one ``matchcast worker``, one ``matchcast api``, and two reference apps served by uvicorn)
and measures, on the same broker, result backend, worker and model:

- **seed**: the design note's sync design (``seed_app.py``: ``run_in_executor`` + ``AsyncResult.get``);
- **matchcast**: the real ``GET /predict/{match_id}``, and ``POST /predict/async/`` then drain;
- **ceiling**: the model in-process behind FastAPI, no queue (``ceiling_app.py``).

Writes ``benchmarks/results/latest.json`` (and ``latest.md``) and prints the tables. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import redis.asyncio as aioredis
from load import IdCycle, Stats, closed_loop, make_session, paced, submit_all
from rich.console import Console
from rich.table import Table
from rich.text import Text
from stack import BENCH_DIR, Stack, log, sigterm_as_interrupt

from matchcast.config import redact_url

RESULT_KEY = "celery-task-meta-"
READY_STATES = ("SUCCESS", "FAILURE", "REVOKED")
MODES = ("seed", "matchcast", "ceiling")
PHASES = ("sync", "async", "flood", "batch", "log")
RESULTS = BENCH_DIR / "results"

TARGETS: list[tuple[str, str, str, float, str]] = [
    # (key in the report, label, comparison, threshold, unit)
    ("sync_c64_throughput_ratio_vs_seed", "sync c64 throughput vs seed", ">=", 3.0, "x"),
    ("sync_c64_p99_ratio_vs_seed", "sync c64 p99 vs seed", "<=", 0.25, "x"),
    ("async_accept_per_s", "async accept", ">=", 2000.0, "/s"),
    ("async_drain_per_s", "async drain", ">=", 2000.0, "/s"),
    ("sync_p99_flood_ratio", "sync c8 p99 flooded / idle", "<=", 2.0, "x"),
    ("model_season_380_ms", "model time, season of 380", "<", 50.0, "ms"),
]


@dataclass(frozen=True)
class Config:
    """What one run measures."""

    quick: bool
    duration_s: float
    warmup_s: float
    concurrency: tuple[int, ...]
    async_n: int
    accept_concurrency: int
    flood_n: int
    flood_sync_clients: int
    flood_max_window_s: float
    batch_size: int
    batch_concurrency: int
    soak_s: float
    profile: bool
    worker_concurrency: int
    api_workers: int
    phases: tuple[str, ...]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """Defaults for a full or ``--quick`` run, overridable one by one."""
        q = args.quick
        return cls(
            quick=q,
            duration_s=args.duration or (3.0 if q else 10.0),
            warmup_s=args.warmup if args.warmup is not None else (1.0 if q else 2.0),
            concurrency=tuple(args.concurrency or (1, 8, 64, 256)),
            async_n=args.async_n or (1000 if q else 5000),
            accept_concurrency=64,
            flood_n=args.flood_n or (2000 if q else 10000),
            flood_sync_clients=8,
            flood_max_window_s=120.0,
            batch_size=1000,
            batch_concurrency=4,
            soak_s=args.soak or 0.0,
            profile=args.profile,
            worker_concurrency=args.worker_concurrency,
            api_workers=args.api_workers,
            phases=tuple(args.phases),
        )


# -- observation of processes ---------------------------------------------------------------------------------


class Processes:
    """CPU time and memory of the processes under test, and (read-only) of the machine's broker and Redis."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.outside = {"rabbitmq": self._listening(5672)}
        if not stack.backend_aof:  # else the run's own Redis is one of the stack's processes
            self.outside["redis"] = self._listening(6379)

    @staticmethod
    def _listening(port: int) -> list[psutil.Process]:
        """The process listening on a local port (the machine's broker or Redis: read, never touched)."""
        with contextlib.suppress(psutil.Error):
            for conn in psutil.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                    return [psutil.Process(conn.pid)]
        return []

    def _groups(self) -> dict[str, list[psutil.Process]]:
        groups: dict[str, list[psutil.Process]] = {}
        for name, proc in self.stack.procs.items():  # both worker lanes count as "worker"
            groups.setdefault("worker" if name.startswith("worker") else name, []).extend(proc.tree())
        groups["bench client"] = [psutil.Process()]
        groups.update(self.outside)
        return groups

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far, per group."""
        out: dict[str, float] = {}
        for name, procs in self._groups().items():
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            out[name] = total
        return out

    def memory(self) -> dict[str, dict[str, float]]:
        """RSS and USS (MiB) of each process under test, its children included."""
        out: dict[str, dict[str, float]] = {}
        for name, proc in self.stack.procs.items():
            rss = uss = 0.0
            tree = proc.tree()
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    info = p.memory_full_info()
                    rss += info.rss
                    uss += info.uss
            out[name] = {"rss_mib": round(rss / 2**20, 1), "uss_mib": round(uss / 2**20, 1), "processes": len(tree)}
        return out


def cpu_delta(before: dict[str, float], after: dict[str, float], ok: int, seconds: float) -> dict[str, Any]:
    """CPU per good request (ms) and cores busy, per process group, over a window."""
    out: dict[str, Any] = {}
    for name, t0 in before.items():
        d = after.get(name, t0) - t0
        out[name] = {"cpu_s": round(d, 3), "cores": round(d / seconds, 2) if seconds else None}
        out[name]["ms_per_ok"] = round(1000 * d / ok, 3) if ok else None
    return out


# -- machine ----------------------------------------------------------------------------------------------------


def describe_machine(stack: Stack) -> dict[str, Any]:
    """CPU, RAM, Python, package versions, broker and backend."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("matchcast", "celery", "kombu", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    for pkg in ("redis", "aiohttp", "numpy", "amqp"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    rabbit = "?"
    with contextlib.suppress(Exception):
        rabbit = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    redis_version = "?"
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis("127.0.0.1", 6379)
        redis_version = str(client.info("server").get("redis_version"))
        client.close()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "broker": f"RabbitMQ {rabbit} on 127.0.0.1:5672, vhost of its own, `ml` a quorum queue, publisher confirms",
        "broker_url": redact_url(stack.broker_url()),
        "backend": f"Redis {redis_version} on 127.0.0.1:6379, db {stack.redis_db}",
        "store": "SQLite (temp home), every bundled match",
        "matches": len(stack.match_ids),
        "worker": (
            f"`matchcast worker --lane bulk` ({len(stack.procs['worker'].tree()) - 1} prefork processes: ml, ml.bulk; "
            "the seed's tasks go here) and `matchcast worker --lane interactive` "
            f"({len(stack.procs['worker-interactive'].tree()) - 1} prefork process: ml.interactive)"
        ),
        "api": f"`matchcast api --workers {stack.api_workers}` (uvicorn, uvloop, httptools, access log off)",
        "shared": "the machine may be shared with other runs: expect noise (see loadavg per phase)",
    }


# -- in-process model time ---------------------------------------------------------------------------------------


def model_time(stack: Stack, repeats: int = 200) -> dict[str, Any]:
    """The predictor alone on 380 rows (a season) and on one row, and one whole ``PredictionService.predict``."""
    from matchcast.service.prediction import PredictionService
    from matchcast.service.wiring import registry_for, store_for

    assert stack.settings is not None
    store = store_for(stack.settings)
    svc = PredictionService(
        store, registry_for(stack.settings), stack.settings.model_alias, markets=stack.settings.markets
    )
    rows = store.feature_table()
    x380 = np.asarray([values for _, _, values in rows[-380:]], dtype=np.float64)
    x1 = x380[:1]

    def best(fn: Callable[[], Any], n: int) -> tuple[float, float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1000, float(np.median(times)) * 1000

    predictor = svc.model.predictor
    season_best, season_median = best(lambda: predictor.predict_proba(x380), repeats)
    one_best, one_median = best(lambda: predictor.predict_proba(x1), repeats)
    ids = iter(stack.match_ids[: repeats * 2])
    svc_best, svc_median = best(lambda: svc.predict({"match_id": next(ids)}), repeats)
    return {
        "model_season_380_ms": round(season_best, 4),
        "model_season_380_median_ms": round(season_median, 4),
        "model_one_row_ms": round(one_best, 4),
        "model_one_row_median_ms": round(one_median, 4),
        "service_predict_one_ms": round(svc_best, 3),
        "service_predict_one_median_ms": round(svc_median, 3),
        "repeats": repeats,
        "model_version": svc.model.version,
        "note": "predictor.predict_proba on 380 rows / 1 row (best of repeats); service_predict_one = "
        "PredictionService.predict({'match_id': id}): store lookup + model + response building",
    }


# -- drain ---------------------------------------------------------------------------------------------------------


def _done_at(meta: dict[str, Any]) -> float | None:
    raw = meta.get("date_done")
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


async def watch_drain(
    backend: aioredis.Redis, task_ids: Sequence[str], started_wall: float, timeout: float
) -> dict[str, Any]:
    """Until every task has a final state in the result backend: when the last one finished, and the states.

    Reads ``celery-task-meta-<id>`` of the tasks still pending (MGET, 1000 at a time) every 0.1 s; the finish
    time is the latest ``date_done`` Celery recorded (the poll's own clock when it has none)."""
    pending = list(task_ids)
    states: Counter[str] = Counter()
    finished: list[float] = []
    polled_until = time.time()
    deadline = time.monotonic() + timeout
    polls = 0
    while pending and time.monotonic() < deadline:
        still: list[str] = []
        for i in range(0, len(pending), 1000):
            chunk = pending[i : i + 1000]
            values = await backend.mget([RESULT_KEY + t for t in chunk])
            now = time.time()
            for tid, raw in zip(chunk, values, strict=True):
                meta = json.loads(raw) if raw else None
                if meta and meta.get("status") in READY_STATES:
                    states[meta["status"]] += 1
                    finished.append(_done_at(meta) or now)
                else:
                    still.append(tid)
        pending = still
        polls += 1
        polled_until = time.time()
        if pending:
            await asyncio.sleep(0.1)
    last = max(finished) if finished else None
    drain_s = (last - started_wall) if last else None
    done = sum(states.values())
    return {
        "tasks": len(task_ids),
        "finished": done,
        "states": dict(states),
        "unfinished": len(pending),
        "drain_s": round(drain_s, 3) if drain_s else None,
        "drain_per_s": round(states.get("SUCCESS", 0) / drain_s, 1) if drain_s else None,
        "seen_done_after_s": round(polled_until - started_wall, 3),
        "polls": polls,
    }


async def confirm_via_api(
    session: aiohttp.ClientSession, api: str, task_ids: Sequence[str], n: int = 50
) -> dict[str, int]:
    """What ``GET /monitoring/task_status/{id}`` says of the last ``n`` tasks."""
    out: Counter[str] = Counter()
    for tid in task_ids[-n:]:
        async with session.get(f"{api}/monitoring/task_status/{tid}") as resp:
            if resp.status != 200:
                out[f"HTTP {resp.status}"] += 1
                continue
            out[str((await resp.json()).get("status"))] += 1
    return dict(out)


def task_ids_in(body: Any) -> list[str]:
    """Every task id in a JSON answer (``task_id`` values, ``task_ids`` lists), in order."""
    found: list[str] = []
    if isinstance(body, dict):
        for k, v in body.items():
            if k == "task_id" and isinstance(v, str):
                found.append(v)
            elif k == "task_ids" and isinstance(v, list):
                found.extend(str(t) for t in v if isinstance(t, str))
            else:
                found.extend(task_ids_in(v))
    elif isinstance(body, list):
        for v in body:
            found.extend(task_ids_in(v))
    return found


# -- the run -------------------------------------------------------------------------------------------------------


class Run:
    """The measurements of one benchmark run, against a started stack."""

    def __init__(
        self, stack: Stack, cfg: Config, report: dict[str, Any], console: Console, out_dir: Path = RESULTS
    ) -> None:
        self.stack, self.cfg, self.report, self.console, self.out_dir = stack, cfg, report, console, out_dir
        self.ps = Processes(stack)
        self.headers = {"X-API-Key": stack.token}
        self.base = {
            "seed": f"http://127.0.0.1:{stack.procs['seed'].port}",
            "matchcast": f"http://127.0.0.1:{stack.procs['api'].port}",
            "ceiling": f"http://127.0.0.1:{stack.procs['ceiling'].port}",
        }
        self.api = self.base["matchcast"]
        self.ids = IdCycle(stack.match_ids)
        # Async phases take disjoint blocks of match ids: an async submission of a match already submitted
        # reuses its task (idempotency), which would be a cache hit, not a prediction.
        self._next_block = 0

    def block(self, n: int) -> list[int]:
        """``n`` match ids never submitted asynchronously in this run."""
        ids = self.stack.match_ids[self._next_block : self._next_block + n]
        if len(ids) < n:
            raise RuntimeError(f"only {len(self.stack.match_ids)} matches: not enough distinct ids for {n} more")
        self._next_block += n
        return ids

    async def settle(self) -> float:
        """Until the ``ml`` queue is empty."""
        return await asyncio.to_thread(self.stack.wait_idle)

    def alive_or_raise(self) -> None:
        """Fail fast when a process under test died."""
        for proc in self.stack.procs.values():
            if not proc.alive():
                raise RuntimeError(f"{proc.name} died (exit {proc.popen.returncode}):\n{proc.tail()}")

    async def sync_phase(
        self, mode: str, concurrency: int, duration: float, warmup: float, label: str | None = None
    ) -> Stats:
        """Warm up, then measure ``concurrency`` closed-loop clients on a mode's sync endpoint."""
        self.alive_or_raise()
        await self.settle()
        base = self.base[mode]
        headers = self.headers if mode == "matchcast" else None

        def url(mid: int) -> str:
            return f"{base}/predict/{mid}"

        async with make_session(concurrency, headers) as session:
            if warmup > 0:
                await closed_loop(session, "warm-up", url, self.ids, concurrency, warmup)
            load = os.getloadavg()[0]
            cpu0 = self.ps.cpu()
            stats = await closed_loop(session, label or mode, url, self.ids, concurrency, duration)
            cpu1 = self.ps.cpu()
        stats.extra["loadavg_1m"] = round(load, 2)
        stats.extra["cpu"] = cpu_delta(cpu0, cpu1, stats.ok, duration + stats.extra["tail_s"])
        log(
            f"{label or mode:>10} c{concurrency:<3} {stats.throughput_rps:8.1f} req/s  p50 {stats.p50_ms} ms  "
            f"p99 {stats.p99_ms} ms  errors {stats.errors or 0}  load {load:.1f}"
        )
        for kind, body in stats.extra.get("error_samples", {}).items():
            log(f"    first {kind}: {body[:200]}")
        return stats

    async def run_sync(self) -> None:
        """Every mode at every concurrency; modes interleaved per concurrency so noise hits them alike."""
        sync: dict[str, dict[str, Any]] = {m: {} for m in MODES}
        self.report["sync"] = sync
        for c in self.cfg.concurrency:
            for mode in MODES:
                stats = await self.sync_phase(mode, c, self.cfg.duration_s, self.cfg.warmup_s)
                sync[mode][str(c)] = stats.as_dict()

    async def submit_async(self, ids: Sequence[int], label: str) -> tuple[list[str], dict[str, Any], float]:
        """POST /predict/async/ for every id at the accept concurrency: (task ids, figures, first send)."""
        c = self.cfg.accept_concurrency
        async with make_session(c, self.headers) as session:
            sub = await submit_all(session, label, f"{self.api}/predict/async/", ids, c, lambda mid: {"match_id": mid})
        task_ids = [body["task_id"] for _, err, body in sub.results if err is None and body and "task_id" in body]
        figures = sub.stats.as_dict()
        figures["submitted"] = len(ids)
        figures["accepted"] = len(task_ids)
        figures["accept_per_s"] = round(len(task_ids) / sub.elapsed_s, 1)
        figures["elapsed_s"] = round(sub.elapsed_s, 3)
        return task_ids, figures, sub.started_wall

    async def run_async(self, backend: aioredis.Redis) -> None:
        """Accept rate at 64 clients with ``ml`` held; then drain released; then the same again (idempotent hits).

        Accept and drain are measured apart: while the submissions come in, the bulk worker does not consume
        ``ml`` (Celery's ``cancel_consumer``), so the accept rate is the API's own and the drain starts from a
        full queue (``add_consumer``), timed from its release to the last result."""
        await self.settle()
        ids = self.block(self.cfg.async_n)
        await asyncio.to_thread(self.stack.pause)
        try:
            cpu0 = self.ps.cpu()
            task_ids, accept, _ = await self.submit_async(ids, "async accept")
            cpu1 = self.ps.cpu()
            accept["cpu"] = cpu_delta(cpu0, cpu1, accept["accepted"], accept["elapsed_s"])
            log(f"async accept: {accept['accept_per_s']}/s ({accept['accepted']}/{len(ids)}) errors {accept['errors']}")
            accept["ml_depth_after"] = await asyncio.to_thread(self.stack.ml_depth)
        finally:
            released = time.time()
            await asyncio.to_thread(self.stack.resume)
        cpu0 = self.ps.cpu()
        drain = await watch_drain(backend, task_ids, released, timeout=max(120.0, len(ids) / 20))
        cpu1 = self.ps.cpu()
        drain["cpu"] = cpu_delta(cpu0, cpu1, drain["finished"], drain["seen_done_after_s"])
        log(f"async drain: {drain['drain_per_s']}/s over {drain['drain_s']} s, states {drain['states']}")
        async with make_session(4, self.headers) as session:
            drain["api_status_of_last_50"] = await confirm_via_api(session, self.api, task_ids)
        self.report["async"] = {"accept": accept, "drain": drain}
        self.report["async_accept_per_s"] = accept["accept_per_s"]
        self.report["async_drain_per_s"] = drain["drain_per_s"]

        # Cached: the same matches submitted again get their existing task back (idempotency key); no model runs.
        await self.settle()
        again = ids[: min(len(ids), 1000)]
        repeat_ids, repeat, _ = await self.submit_async(again, "async resubmit")
        same = sum(1 for a, b in zip(repeat_ids, task_ids, strict=False) if a == b)
        depth = await asyncio.to_thread(self.stack.ml_depth)
        repeat.update(same_task_id=same, ml_depth_after=depth)
        self.report["cached"] = {
            "note": "No prediction cache exists. The only reuse is async idempotency: re-submitting a match whose "
            "task is queued, running or done returns that task (no new prediction). Measured here; sync has none.",
            "async_resubmit": repeat,
        }
        log(f"async resubmit (idempotent hits): {repeat['accept_per_s']}/s, same task id {same}/{len(again)}")

    async def run_log_ab(self, backend: aioredis.Redis) -> None:
        """What the prediction log costs: sync c64 and async accept (and drain) with the log off and on.

        Rounds alternate (off, on, off, on) so that drift of the shared machine hits both alike; both worker
        lanes restart for each round with ``MATCHCAST_PREDICTION_LOG`` set (the API is the same process)."""
        rounds: list[dict[str, Any]] = []
        for on in (False, True, False, True):
            await asyncio.to_thread(self.stack.restart_workers, self.cfg.worker_concurrency, prediction_log=on)
            label = f"log {'on' if on else 'off'}"
            sync = await self.sync_phase("matchcast", 64, self.cfg.duration_s, self.cfg.warmup_s, label=label)
            await self.settle()
            ids = self.block(self.cfg.async_n)
            await asyncio.to_thread(self.stack.pause)
            try:
                task_ids, accept, _ = await self.submit_async(ids, f"async accept, {label}")
            finally:
                released = time.time()
                await asyncio.to_thread(self.stack.resume)
            drain = await watch_drain(backend, task_ids, released, timeout=max(120.0, len(ids) / 20))
            rounds.append(
                {
                    "prediction_log": on,
                    "sync_c64_rps": sync.throughput_rps,
                    "sync_c64_p99_ms": sync.p99_ms,
                    "sync_errors": sync.errors,
                    "async_accept_per_s": accept["accept_per_s"],
                    "async_drain_per_s": drain["drain_per_s"],
                    # CPU per request is steadier than wall-clock rates on a shared machine: the worker's is the log's
                    "sync_c64_worker_cpu_ms": sync.extra["cpu"].get("worker", {}).get("ms_per_ok"),
                }
            )
            log(
                f"{label}: sync c64 {sync.throughput_rps} req/s p99 {sync.p99_ms} ms; async accept "
                f"{accept['accept_per_s']}/s, drain {drain['drain_per_s']}/s"
            )
        summary: dict[str, Any] = {"rounds": rounds}
        for key in ("sync_c64_rps", "sync_c64_p99_ms", "async_accept_per_s", "async_drain_per_s"):
            off = statistics.mean(r[key] for r in rounds if not r["prediction_log"])
            on_ = statistics.mean(r[key] for r in rounds if r["prediction_log"])
            summary[key] = {"off": round(off, 1), "on": round(on_, 1), "ratio_on_off": round(on_ / off, 3)}
        summary["log_rows"] = await asyncio.to_thread(self.stack.prediction_log_rows)
        self.report["prediction_log"] = summary
        log(
            "prediction log on/off: sync c64 {sync_c64_rps[ratio_on_off]}x, async accept "
            "{async_accept_per_s[ratio_on_off]}x, async drain {async_drain_per_s[ratio_on_off]}x; "
            "{log_rows} rows logged".format(**summary)
        )

    async def run_flood(self, backend: aioredis.Redis) -> None:
        """Sync p99 at 8 clients idle, then while ``flood_n`` async predictions wait in ``ml``.

        The flood is submitted through the API (64 clients) while the bulk worker holds off ``ml``, so all of it
        is queued; then the worker is let go and the sync clients measure while flood messages still wait in
        ``ml`` (at least 1 s, at most ``flood_max_window_s``)."""
        c = self.cfg.flood_sync_clients
        idle = await self.sync_phase("matchcast", c, self.cfg.duration_s, self.cfg.warmup_s, "idle")
        await self.settle()
        ids = self.block(self.cfg.flood_n)
        state: dict[str, Any] = {"depth": None, "timeline": [], "stop": False}
        t_start = time.monotonic()

        async def sample_depth() -> None:
            while not state["stop"]:
                with contextlib.suppress(Exception):
                    state["depth"] = await asyncio.to_thread(self.stack.ml_depth)
                    state["timeline"].append((round(time.monotonic() - t_start, 2), state["depth"]))
                await asyncio.sleep(0.25)

        def url(mid: int) -> str:
            return f"{self.api}/predict/{mid}"

        sampler = asyncio.create_task(sample_depth())
        try:
            await asyncio.to_thread(self.stack.pause)  # the flood waits, all of it, in ml
            try:
                task_ids, submit, _ = await self.submit_async(ids, "flood submit")
            finally:
                started = time.time()
                await asyncio.to_thread(self.stack.resume)
            window_start = round(time.monotonic() - t_start, 2)
            depth_at_start = await asyncio.to_thread(self.stack.ml_depth)
            state["depth"] = depth_at_start
            load = os.getloadavg()[0]
            cpu0 = self.ps.cpu()
            async with make_session(c, self.headers) as session:
                stats = await closed_loop(
                    session,
                    "flooded",
                    url,
                    self.ids,
                    c,
                    min(self.cfg.duration_s, 1.0),  # the window lasts while flood tasks wait in ml
                    extend_while=lambda: state["depth"] is None or state["depth"] > 0,
                    max_duration=self.cfg.flood_max_window_s,
                )
            cpu1 = self.ps.cpu()
        finally:
            state["stop"] = True
            await sampler
        stats.extra.update(loadavg_1m=round(load, 2), ml_depth_at_start=depth_at_start, window_start_s=window_start)
        stats.extra["cpu"] = cpu_delta(cpu0, cpu1, stats.ok, stats.duration_s + stats.extra["tail_s"])
        log(
            f"   flooded c{c:<3} {stats.throughput_rps:8.1f} req/s  p50 {stats.p50_ms} ms  p99 {stats.p99_ms} ms  "
            f"errors {stats.errors or 0}  window {stats.duration_s:.1f} s from ml depth {depth_at_start}"
        )
        drain = await watch_drain(backend, task_ids, started, timeout=max(180.0, len(ids) / 20))
        ratio = stats.p99_ms / idle.p99_ms if stats.p99_ms and idle.p99_ms else None
        timeline = state["timeline"]
        self.report["flood"] = {
            "async_n": len(ids),
            "sync_clients": c,
            "idle": idle.as_dict(),
            "flooded": stats.as_dict(),
            "flood_submit": submit,
            "flood_drain": drain,
            "ml_depth_timeline": timeline[:: max(1, len(timeline) // 120)],
            "note": "the flood is submitted through the API first, with the bulk worker holding off ml so that all of "
            "it is queued; the worker is then let go and the sync clients measure while flood messages still wait in "
            "ml (at least 1 s, at most flood_max_window_s). "
            "Closed-loop clients send few requests while each waits long: read p99 and max, not p50.",
        }
        self.report["sync_p99_flood_ratio"] = round(ratio, 2) if ratio else None
        log(f"flood ratio p99 {ratio and round(ratio, 2)}; flood drained at {drain['drain_per_s']}/s")

    async def run_batch(self, backend: aioredis.Redis) -> None:
        """``POST /predict/async/batch`` if the API offers it."""
        async with make_session(2, self.headers) as session, session.get(f"{self.api}/openapi.json") as resp:
            spec = await resp.json() if resp.status == 200 else {}
        paths = spec.get("paths", {})
        path = next((p for p in ("/predict/async/batch", "/predict/async/batch/") if p in paths), None)
        if path is None or "post" not in paths[path]:
            self.report["batch"] = {"available": False, "note": "POST /predict/async/batch not in /openapi.json"}
            log("batch: not available")
            return
        await self.settle()
        ids = self.block(self.cfg.async_n)
        chunks = [ids[i : i + self.cfg.batch_size] for i in range(0, len(ids), self.cfg.batch_size)]
        c = self.cfg.batch_concurrency
        async with make_session(c, self.headers) as session:
            sub = await submit_all(session, "batch", f"{self.api}{path}", chunks, c, lambda ch: {"match_ids": ch})
        task_ids = [t for _, err, body in sub.results if err is None for t in task_ids_in(body)]
        out: dict[str, Any] = {"available": True, "path": path, "requests": sub.stats.as_dict()}
        out["matches"] = len(ids)
        out["task_ids"] = len(task_ids)
        out["accept_per_s"] = round(len(task_ids) / sub.elapsed_s, 1) if task_ids else None
        if not task_ids:
            sample = next((body for _, _, body in sub.results if body is not None), None)
            out["note"] = f"no task ids found in the answers; first answer: {json.dumps(sample)[:500]}"
        else:
            out["drain"] = await watch_drain(backend, task_ids, sub.started_wall, timeout=max(120.0, len(ids) / 20))
        self.report["batch"] = out
        log(f"batch: {out.get('accept_per_s')} predictions accepted/s, drain {out.get('drain', {}).get('drain_per_s')}")

    @contextlib.asynccontextmanager
    async def spying(self, tag: str, out: dict[str, Any]) -> Any:
        """py-spy (100 Hz, raw folded stacks) on the API and on the worker with its pool children while inside."""
        spy = Path(sys.executable).with_name("py-spy")
        files = {name: self.out_dir / f"profile-{name}-{tag}.folded" for name in ("api", "worker")}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        spies = []
        for name, path in files.items():
            argv = [str(spy), "record", "-p", str(self.stack.procs[name].pid), "-r", "100", "-f", "raw", "--gil"]
            argv += ["-o", str(path)] + (["--subprocesses"] if name == "worker" else [])
            spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        await asyncio.sleep(1.0)  # attached
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            for p in spies:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            for p in spies:
                try:
                    await asyncio.to_thread(p.wait, 30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for name, path in files.items():
                out[name] = top_frames(path, seconds)
                if path.exists():  # raw stacks are large and repetitive: keep them gzipped (zcat for flamegraphs)
                    gz = path.with_name(path.name + ".gz")
                    with path.open("rb") as src, gzip.open(gz, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    path.unlink()
                    out[name]["folded"] = _shown(gz)

    async def run_profile(self) -> None:
        """py-spy on the API and the worker under sync c64 load, then under async submission (not in the tables)."""
        if not Path(sys.executable).with_name("py-spy").exists():
            self.report["profile"] = {"note": "py-spy not installed (.venv/bin/pip install py-spy)"}
            return
        sync_prof: dict[str, Any] = {}
        await self.settle()
        async with self.spying("sync-c64", sync_prof):
            stats = await self.sync_phase("matchcast", 64, self.cfg.duration_s, 0, "profiled")
        sync_prof["phase"] = stats.as_dict()
        await self.settle()
        async_prof: dict[str, Any] = {}
        ids = self.block(self.cfg.async_n)
        async with self.spying("async-accept-c64", async_prof):
            _, accept, _ = await self.submit_async(ids, "profiled accept")
        async_prof["phase"] = accept
        log(f"profiled: sync c64 {stats.throughput_rps} req/s, async accept {accept['accept_per_s']}/s (py-spy on)")
        self.report["profile"] = {
            "note": "py-spy record -r 100 --gil (raw): only threads holding the GIL (Python at work); API: the uvicorn "
            "process; worker: parent and pool children. busy_share_of_one_core = samples / (100 Hz x seconds).",
            "sync_c64": sync_prof,
            "async_accept_c64": async_prof,
        }

    async def run_soak(self) -> None:
        """Half of matchcast's peak sync throughput for ``soak_s``, RSS sampled every 10 s."""
        peak = max(v["throughput_rps"] for v in self.report["sync"]["matchcast"].values())
        rate = max(1.0, peak / 2)
        await self.settle()
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def sampler() -> None:
            t0 = time.monotonic()
            while True:
                mem = await asyncio.to_thread(self.ps.memory)
                samples.append({"t_s": round(time.monotonic() - t0, 1), **{k: v["rss_mib"] for k, v in mem.items()}})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 10)
                if stop.is_set():
                    return

        def url(mid: int) -> str:
            return f"{self.api}/predict/{mid}"

        log(f"soak: {rate:.0f} req/s for {self.cfg.soak_s:.0f} s ...")
        task = asyncio.create_task(sampler())
        try:
            async with make_session(256, self.headers) as session:
                stats = await paced(session, "soak", url, self.ids, rate, self.cfg.soak_s, 256)
        finally:
            stop.set()
            await task
        growth = {k: round(samples[-1][k] - samples[0][k], 1) for k in ("api", "worker") if samples and k in samples[0]}
        self.report["soak"] = {"rate_rps": round(rate, 1), "stats": stats.as_dict(), "rss_mib": samples}
        self.report["soak"]["rss_growth_mib"] = growth
        log(f"soak: {stats.throughput_rps} req/s p99 {stats.p99_ms} ms errors {stats.errors}; RSS growth {growth}")

    async def main(self) -> None:
        """Every phase in order."""
        backend = aioredis.Redis.from_url(self.stack.backend_url())
        try:
            phases = self.cfg.phases
            if "sync" in phases:
                await self.run_sync()
            if "async" in phases:
                await self.run_async(backend)
            if "flood" in phases:
                await self.run_flood(backend)
            if "batch" in phases:
                await self.run_batch(backend)
            if "log" in phases:
                await self.run_log_ab(backend)
            await self.settle()
            await asyncio.sleep(2)
            self.report["memory"]["after_runs"] = await asyncio.to_thread(self.ps.memory)
            if self.cfg.profile:
                await self.run_profile()
            if self.cfg.soak_s and "sync" in phases:
                await self.run_soak()
        finally:
            await backend.aclose()


def _shown(path: Path) -> str:
    """A path relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(BENCH_DIR.parent))
    except ValueError:
        return str(path)


def _short(frame: str) -> tuple[str, str]:
    """``fn (pkg/mod.py:12)`` (py-spy's form) as (``fn (pkg/mod.py)``, ``pkg``): one entry per function."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame, frame
    path = where.rstrip(")").rsplit(":", 1)[0]
    package = path.split("/", 1)[0].removesuffix(".py")
    if package.startswith("<frozen"):
        package = "<frozen>"
    return f"{name} ({path})", package


def top_frames(path: Path, duration: float, n: int = 15) -> dict[str, Any]:
    """Where a py-spy raw (folded) profile spends its samples: per package and per function (self), matchcast's
    own functions (inclusive: the function and what it calls), and per process (worker: main or pool child)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"note": f"no profile written to {path.name}"}
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        raw = stack.split(";")
        procs = [f for f in raw if f.startswith("process ")]
        frames = [_short(f) for f in raw if not f.startswith("process ")]
        if not frames:
            continue
        total += k
        own[frames[-1][0]] += k
        packages[frames[-1][1]] += k
        processes["pool child" if len(procs) > 1 else "main process"] += k
        for f in {name for name, pkg in frames if pkg == "matchcast" and "cli/" not in name and "__main__" not in name}:
            incl[f] += k
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "busy_share_of_one_core": round(total / (100 * duration), 2) if duration else None,
        "packages_self": [(p, pct(c)) for p, c in packages.most_common(n)],
        "self": [(f, pct(c)) for f, c in own.most_common(n)],
        "matchcast_inclusive": [(f, pct(c)) for f, c in incl.most_common(n)],
        "processes": {p: pct(c) for p, c in processes.items()},
        "folded": _shown(path),
    }


# -- results -------------------------------------------------------------------------------------------------------


def ratios(report: dict[str, Any]) -> None:
    """The headline ratios against the seed and the ceiling at 64 clients, and the target verdicts."""
    sync = report.get("sync", {})
    seed, mc, ceil = (sync.get(m, {}).get("64") for m in MODES)
    if seed and mc:
        if seed["throughput_rps"]:
            report["sync_c64_throughput_ratio_vs_seed"] = round(mc["throughput_rps"] / seed["throughput_rps"], 2)
        if seed["p99_ms"] and mc["p99_ms"]:
            report["sync_c64_p99_ratio_vs_seed"] = round(mc["p99_ms"] / seed["p99_ms"], 3)
    if ceil and mc and ceil["throughput_rps"]:
        report["sync_c64_throughput_share_of_ceiling"] = round(mc["throughput_rps"] / ceil["throughput_rps"], 3)
    report["model_season_380_ms"] = report.get("model_time", {}).get("model_season_380_ms")
    verdicts = []
    for key, label, op, threshold, unit in TARGETS:
        value = report.get(key)
        ok = None
        if value is not None:
            ok = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
        verdicts.append({"key": key, "label": label, "value": value, "target": f"{op} {threshold:g}{unit}", "pass": ok})
    report["targets"] = verdicts


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def _errors(e: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(e.items())) if e else "0"


def tables(report: dict[str, Any]) -> list[Table]:
    """The report as rich tables."""
    out = []
    sync = report.get("sync", {})
    t = Table(title="Sync GET /predict/{match_id}: closed-loop clients, distinct match ids")
    for col in ("clients", "mode", "req/s", "x seed", "p50 ms", "p95 ms", "p99 ms", "p99 x seed", "errors", "load"):
        t.add_column(col, justify="left" if col in ("mode", "errors") else "right")
    cpu_t = Table(title="Where the CPU goes: CPU ms per good request (* machine-wide, shared with other users)")
    for col in ("clients", "mode", "front process", "worker", "rabbitmq*", "redis*", "bench client"):
        cpu_t.add_column(col, justify="left" if col == "mode" else "right")
    concurrencies = sorted({int(c) for m in sync.values() for c in m}, key=int)
    for c in concurrencies:
        seed = sync.get("seed", {}).get(str(c))
        for mode in MODES:
            s = sync.get(mode, {}).get(str(c))
            if not s:
                continue
            x = p = "-"
            if seed and mode != "seed":
                x = f"{s['throughput_rps'] / seed['throughput_rps']:.2f}" if seed["throughput_rps"] else "-"
                p = f"{s['p99_ms'] / seed['p99_ms']:.3f}" if seed["p99_ms"] and s["p99_ms"] else "-"
            t.add_row(
                str(c),
                mode,
                f"{s['throughput_rps']:.0f}",
                x,
                _ms(s["p50_ms"]),
                _ms(s["p95_ms"]),
                _ms(s["p99_ms"]),
                p,
                _errors(s["errors"]),
                f"{s['extra'].get('loadavg_1m', 0):.1f}",
            )
            cpu = s["extra"].get("cpu", {})
            front = {"seed": "seed", "matchcast": "api", "ceiling": "ceiling"}[mode]
            parts = [cpu.get(k, {}).get("ms_per_ok") for k in (front, "worker", "rabbitmq", "redis", "bench client")]
            cpu_t.add_row(str(c), mode, *("-" if v is None else f"{v:.2f}" for v in parts))
        if c != concurrencies[-1]:
            t.add_section()
            cpu_t.add_section()
    out += [t, cpu_t]

    t = Table(title="Async, flood, batch, cached")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("detail")
    a = report.get("async")
    if a:
        acc, dr = a["accept"], a["drain"]
        t.add_row(
            "async_accept_per_s",
            f"{acc['accept_per_s']:.0f}",
            f"{acc['accepted']}/{acc['submitted']} accepted in {acc['elapsed_s']} s at c{acc['concurrency']}; "
            f"p50 {_ms(acc['p50_ms'])} p99 {_ms(acc['p99_ms'])} ms; errors {_errors(acc['errors'])}",
        )
        t.add_row(
            "async_drain_per_s",
            f"{dr['drain_per_s'] or 0:.0f}",
            f"{dr['states']} {dr['drain_s']} s from release of the full ml to the last result; "
            f"API status of last 50: {dr.get('api_status_of_last_50')}",
        )
    f = report.get("flood")
    if f:
        fl, idle = f["flooded"], f["idle"]
        t.add_row(
            "sync_p99_flood_ratio",
            f"{report.get('sync_p99_flood_ratio')}",
            f"c{f['sync_clients']} p99 {_ms(fl['p99_ms'])} ms flooded vs {_ms(idle['p99_ms'])} ms idle "
            f"(p50 {_ms(fl['p50_ms'])} vs {_ms(idle['p50_ms'])}); {fl['requests']} sync requests over "
            f"{fl['duration_s']:.1f} s from ml depth {fl['extra']['ml_depth_at_start']}; "
            f"errors {_errors(fl['errors'])}",
        )
        t.add_row(
            "flood accept / drain",
            f"{f['flood_submit']['accept_per_s']:.0f} / {f['flood_drain']['drain_per_s'] or 0:.0f}",
            f"{f['async_n']} async predictions; states {f['flood_drain']['states']}",
        )
    b = report.get("batch")
    if b:
        if b.get("available"):
            dr = b.get("drain", {})
            t.add_row(
                "batch accept / drain",
                f"{b.get('accept_per_s') or 0:.0f} / {dr.get('drain_per_s') or 0:.0f}",
                f"{b['matches']} matches in {b['requests']['requests']} requests; {b.get('note', '')}",
            )
        else:
            t.add_row("batch", "not available", b.get("note", ""))
    cached = report.get("cached")
    if cached:
        r = cached["async_resubmit"]
        t.add_row(
            "cached: async resubmit",
            f"{r['accept_per_s']:.0f}/s",
            f"idempotent hits, same task id {r['same_task_id']}/{r['submitted']}; no prediction cache exists",
        )
    out.append(t)

    mem = report.get("memory", {})
    if mem:
        t = Table(title="Memory (MiB, process and its children)")
        for col in ("process", "RSS at start", "RSS after runs", "USS after runs", "processes"):
            t.add_column(col, justify="left" if col == "process" else "right")
        start, after = mem.get("at_start", {}), mem.get("after_runs", {})
        for name in after or start:
            a0, a1 = start.get(name, {}), after.get(name, {})
            t.add_row(
                name, str(a0.get("rss_mib", "-")), str(a1.get("rss_mib", "-")), str(a1.get("uss_mib", "-")),
                str(a1.get("processes", "-")),
            )  # fmt: skip
        soak = report.get("soak")
        if soak:
            growth = ", ".join(f"{k} {v:+.1f}" for k, v in soak["rss_growth_mib"].items())
            t.add_row(f"soak {soak['stats']['duration_s']:.0f} s, RSS growth", "", growth, "", "")
        out.append(t)

    mt = report.get("model_time")
    if mt:
        t = Table(title="In-process model time (best of repeats)")
        t.add_column("call")
        t.add_column("ms", justify="right")
        t.add_row("predict_proba, season of 380 rows", f"{mt['model_season_380_ms']:.4f}")
        t.add_row("predict_proba, 1 row", f"{mt['model_one_row_ms']:.4f}")
        t.add_row("PredictionService.predict({'match_id'}) (lookup + model)", f"{mt['service_predict_one_ms']:.3f}")
        out.append(t)

    prof = report.get("profile", {})
    for phase, title in (("sync_c64", "sync GET c64"), ("async_accept_c64", "async POST c64")):
        for proc in ("api", "worker"):
            top = prof.get(phase, {}).get(proc, {})
            if not top.get("self"):
                continue
            procs = ", ".join(f"{k} {v}%" for k, v in sorted(top.get("processes", {}).items()))
            t = Table(
                title=f"py-spy --gil, {proc} under {title}: GIL held {top['busy_share_of_one_core']} of the time"
                + (f" ({procs})" if proc == "worker" else "")
            )
            for col in ("self %", "package (self)", "self %", "function (self)", "incl %", "matchcast (inclusive)"):
                t.add_column(col, justify="right" if "%" in col else "left")
            rows = zip(top["packages_self"][:12], top["self"][:12], top["matchcast_inclusive"][:12], strict=False)
            for (pk, p0), (f1, p1), (f2, p2) in rows:
                t.add_row(f"{p0:.1f}", pk, f"{p1:.1f}", f1, f"{p2:.1f}", f2)
            out.append(t)

    t = Table(title="Targets")
    for col in ("target", "value", "wanted", "verdict"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for v in report.get("targets", []):
        verdict = "-" if v["pass"] is None else ("[green]PASS[/]" if v["pass"] else "[red]FAIL[/]")
        t.add_row(v["label"], "-" if v["value"] is None else f"{v['value']:g}", v["target"], verdict)
    out.append(t)
    return out


def markdown_table(table: Table) -> str:
    """A rich table as a GitHub Markdown table, its title in bold above it."""

    def cell(v: Any) -> str:
        return Text.from_markup(v).plain.replace("|", "\\|") if isinstance(v, str) else str(v)

    cols = table.columns
    lines = [f"**{cell(table.title)}**", ""] if table.title else []
    lines.append("| " + " | ".join(cell(c.header) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in cols) + "|")
    for row in zip(*(c._cells for c in cols), strict=True):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], path: Path, console: Console) -> None:
    """JSON, plus the tables in Markdown next to it (``.md``), as BENCHMARKS.md shows them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)
    m = report.get("machine", {})
    head = (
        f"Command: `{report['command']}`, {report['started_at']} .. {report.get('finished_at')}; "
        f"{m.get('cpu_count')} x {m.get('cpu_model')}, {m.get('ram_gib')} GiB, Python {m.get('python')}; "
        f"load average {m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end.\n"
    )
    path.with_suffix(".md").write_text(head + "\n" + "\n".join(markdown_table(t) for t in tables(report)))
    console.print(f"wrote {path} and {path.with_suffix('.md')}")


# -- entry point ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s windows, 1,000 async, 2,000 flood")
    p.add_argument("--duration", type=float, help="seconds per measured window (10; quick 3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each window (2; quick 1)")
    p.add_argument("--concurrency", type=int, nargs="+", help="closed-loop clients (1 8 64 256)")
    p.add_argument("--async-n", type=int, help="async submissions measured (5000; quick 1000)")
    p.add_argument("--flood-n", type=int, help="async predictions in the flood (10000; quick 2000)")
    p.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=[p for p in PHASES if p != "log"],
        help="what to measure (all but log by default; log: the prediction log off and on, alternating)",
    )
    p.add_argument("--soak", type=float, metavar="SECONDS", help="also run at half of peak load, RSS every 10 s")
    p.add_argument("--profile", action="store_true", help="also py-spy the API and worker under c64 load")
    p.add_argument("--worker-concurrency", type=int, default=2, help="prefork processes of the worker (2)")
    p.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="processes of `matchcast api --workers` (1, the default of matchcast)",
    )
    p.add_argument("--home", type=Path, help="reuse (or create and keep) this trained home instead of a temp one")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs) at the end")
    p.add_argument(
        "--backend-aof",
        choices=("no", "everysec", "always"),
        help="result backend on a Redis of the run's own with this append-only fsync (default: the machine's Redis)",
    )
    p.add_argument(
        "--backend-replica",
        action="store_true",
        help="with --backend-aof: a replica of that Redis, and task records and results wait for it (WAIT)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="report path")
    return p.parse_args(argv)


def start_stack(stack: Stack, cfg: Config) -> None:
    """Vhost, Redis db, home, key, then worker, API, seed and ceiling, each waited for."""
    stack.check_services()
    stack.create_vhost()
    if stack.backend_aof:
        stack.start_own_redis()
    else:
        stack.take_redis_db()
    log(f"vhost {stack.vhost}, result backend {stack.backend_url()}, work folder {stack.workdir}")
    stack.prepare_home()
    stack.make_settings()
    stack.create_key()
    worker = stack.start_worker(cfg.worker_concurrency)
    interactive = stack.start_worker(1, lane="interactive", name="worker-interactive")
    api = stack.start_api(cfg.api_workers)
    seed = stack.start_uvicorn("seed", "seed_app")
    ceiling = stack.start_uvicorn("ceiling", "ceiling_app")
    stack.wait_worker(worker, cfg.worker_concurrency)
    stack.wait_worker(interactive, 1)
    for proc in (seed, ceiling):
        stack.wait_http(proc, "/health")
    stack.wait_http(api, "/ready", headers={"X-API-Key": stack.token})
    log(
        f"stack up: api :{api.port} (pid {api.pid}), seed :{seed.port}, ceiling :{ceiling.port}, "
        f"worker pid {worker.pid}"
    )


def run_loop(coro: Any) -> Any:
    """uvloop for the load generator when installed (as the servers use)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran end to end (targets are reported, not enforced)."""
    args = parse_args(argv)
    cfg = Config.from_args(args)
    console = Console() if Console().is_terminal else Console(width=160)
    command = " ".join([".venv/bin/python", "benchmarks/bench_serving.py", *map(shlex.quote, sys.argv[1:])])
    report: dict[str, Any] = {
        "schema": 1,
        "command": command,
        "quick": cfg.quick,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.__dict__,
        "memory": {},
    }
    stack = Stack(home=args.home, keep=args.keep, backend_aof=args.backend_aof, backend_replica=args.backend_replica)
    report["backend_aof"] = args.backend_aof
    report["backend_replica"] = args.backend_replica
    rc = 0
    with sigterm_as_interrupt():
        try:
            start_stack(stack, cfg)
            report["machine"] = describe_machine(stack)
            log("timing the model in-process ...")
            report["model_time"] = model_time(stack)
            report["memory"]["at_start"] = Processes(stack).memory()
            run_loop(Run(stack, cfg, report, console, args.out.parent).main())
            report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            ratios(report)
            for table in tables(report):
                console.print(table)
            write(report, args.out, console)
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            rc = 130
        except Exception:
            traceback.print_exc()
            for proc in stack.procs.values():
                log(f"--- {proc.name} log tail ---\n{proc.tail(1500)}")
            rc = 1
        finally:
            stack.close()  # every step guarded: a second Ctrl-C interrupts only the step it lands in
            if rc:
                with contextlib.suppress(Exception):
                    ratios(report)
                    partial = args.out.with_name("partial.json.tmp")
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    partial.write_text(json.dumps(report, indent=2, default=str))
                    log(f"partial results in {partial}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
