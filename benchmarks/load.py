"""Load generation: closed-loop clients, bulk submission and a paced open loop, on one aiohttp session each.

Closed loop: ``concurrency`` clients each send a request, wait for its answer, and send the next until the
window closes; no new request starts after it closes, requests in flight are awaited (bounded by the client
timeout). Throughput counts good answers completed inside the window; latencies are those of every request
started inside it. A good answer is a 2xx whose body contains ``expect``; everything else is an error, counted
by status (``HTTP 504``) or exception name (``TimeoutError``, ``ClientConnectorError``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import numpy as np

CLIENT_TIMEOUT_S = 40.0  # longer than the 30 s sync timeout, so the server always answers first


class IdCycle:
    """Round-robin over match ids, shared by every client of every phase (so consecutive requests differ)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids, self.i = list(ids), 0

    def __next__(self) -> int:
        mid = self.ids[self.i % len(self.ids)]
        self.i += 1
        return mid


def make_session(concurrency: int, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A session whose connection pool holds exactly ``concurrency`` keep-alive connections."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=120)
    return aiohttp.ClientSession(
        connector=connector, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    )


@dataclass
class Stats:
    """Figures of one measured window."""

    label: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    throughput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return asdict(self)


def summarise(
    label: str, concurrency: int, duration: float, latencies: list[float], ok_in_window: int, errors: Counter[str]
) -> Stats:
    """Percentiles (ms) and throughput of a window."""
    lat = np.asarray(latencies) * 1000.0
    pct = np.percentile(lat, [50, 95, 99]) if lat.size else [None, None, None]
    return Stats(
        label=label,
        concurrency=concurrency,
        duration_s=round(duration, 3),
        requests=int(lat.size),
        ok=int(lat.size) - sum(errors.values()),
        throughput_rps=round(ok_in_window / duration, 1) if duration > 0 else 0.0,
        p50_ms=_r(pct[0]),
        p95_ms=_r(pct[1]),
        p99_ms=_r(pct[2]),
        max_ms=_r(lat.max()) if lat.size else None,
        mean_ms=_r(lat.mean()) if lat.size else None,
        errors=dict(errors),
    )


def _r(v: Any) -> float | None:
    return None if v is None else round(float(v), 2)


async def _one(
    session: aiohttp.ClientSession, method: str, url: str, body: Any, expect: bytes | None
) -> tuple[str | None, bytes]:
    """Send one request: (None, body) when good, (error label, body) otherwise."""
    try:
        async with session.request(method, url, json=body) as resp:
            data = await resp.read()
            if not 200 <= resp.status < 300:
                return f"HTTP {resp.status}", data
            if expect is not None and expect not in data:
                return "bad body", data
            return None, data
    except TimeoutError:
        return "TimeoutError", b""
    except aiohttp.ClientError as exc:
        return type(exc).__name__, b""


async def closed_loop(
    session: aiohttp.ClientSession,
    label: str,
    url_for: Callable[[int], str],
    ids: IdCycle,
    concurrency: int,
    duration: float,
    *,
    method: str = "GET",
    body_for: Callable[[int], Any] | None = None,
    expect: bytes | None = b'"probabilities"',
    extend_while: Callable[[], bool] | None = None,
    max_duration: float | None = None,
) -> Stats:
    """``concurrency`` clients back to back for ``duration`` seconds.

    With ``extend_while``, the window stays open past ``duration`` while it returns True (up to ``max_duration``);
    once closed it stays closed."""
    latencies: list[float] = []
    good_at: list[float] = []
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    start = time.perf_counter()
    deadline = start + duration
    hard = start + max(duration, max_duration or duration)
    closed_at: float | None = None

    def is_open(t: float) -> bool:
        nonlocal closed_at
        if closed_at is not None:
            return False
        if t < deadline or (extend_while is not None and t < hard and extend_while()):
            return True
        closed_at = t
        return False

    async def client() -> None:
        while True:
            t0 = time.perf_counter()
            if not is_open(t0):
                return
            mid = next(ids)
            err, data = await _one(session, method, url_for(mid), body_for(mid) if body_for else None, expect)
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            if err is not None:
                errors[err] += 1
                samples.setdefault(err, data[:300].decode(errors="replace"))
            else:
                good_at.append(t1)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    end = closed_at if closed_at is not None else deadline
    ok_in_window = sum(1 for t in good_at if t <= end)
    stats = summarise(label, concurrency, end - start, latencies, ok_in_window, errors)
    stats.extra["tail_s"] = round(time.perf_counter() - end, 3)  # waiting for the last requests in flight
    if samples:
        stats.extra["error_samples"] = samples  # the first answer of each kind of error
    return stats


@dataclass
class Submission:
    """What bulk submission gave back."""

    started_wall: float  # time.time() of the first request
    elapsed_s: float  # first request sent .. last answer received
    results: list[tuple[int, str | None, Any]]  # (match id, error label or None, parsed JSON body or None)
    stats: Stats


async def submit_all(
    session: aiohttp.ClientSession,
    label: str,
    url: str,
    items: Sequence[Any],
    concurrency: int,
    body_for: Callable[[Any], Any],
) -> Submission:
    """POST one request per item, ``concurrency`` at a time, each client taking the next item when done."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    results: list[tuple[int, str | None, Any]] = []
    it = iter(enumerate(items))
    started_wall = time.time()
    start = time.perf_counter()

    async def client() -> None:
        for i, item in it:
            t0 = time.perf_counter()
            err, data = await _one(session, "POST", url, body_for(item), None)
            latencies.append(time.perf_counter() - t0)
            if err is not None:
                errors[err] += 1
                samples.setdefault(err, data[:300].decode(errors="replace"))
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            results.append((i, err, parsed))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ok = len(items) - sum(errors.values())
    stats = summarise(label, concurrency, elapsed, latencies, ok, errors)
    if samples:
        stats.extra["error_samples"] = samples
    results.sort(key=lambda r: r[0])
    return Submission(started_wall, elapsed, results, stats)


async def paced(
    session: aiohttp.ClientSession,
    label: str,
    url_for: Callable[[int], str],
    ids: IdCycle,
    rate: float,
    duration: float,
    max_in_flight: int,
    expect: bytes | None = b'"probabilities"',
) -> Stats:
    """An open loop: ``rate`` requests a second for ``duration`` seconds, at most ``max_in_flight`` at once."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    ok = 0
    late = 0
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()

    async def one(mid: int) -> None:
        nonlocal ok
        try:
            t0 = time.perf_counter()
            err, data = await _one(session, "GET", url_for(mid), None, expect)
            latencies.append(time.perf_counter() - t0)
            if err is None:
                ok += 1
            else:
                errors[err] += 1
                samples.setdefault(err, data[:300].decode(errors="replace"))
        finally:
            slots.release()

    n = 0
    while True:
        due = start + n / rate
        now = time.perf_counter()
        if due - start >= duration:
            break
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 0.1:
            late += 1
        await slots.acquire()
        task = asyncio.create_task(one(next(ids)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    stats = summarise(label, max_in_flight, elapsed, latencies, ok, errors)
    stats.extra.update(target_rps=round(rate, 1), sent=n, sent_late=late)
    if samples:
        stats.extra["error_samples"] = samples
    return stats
