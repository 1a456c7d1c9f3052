"""Token buckets: a burst, then the configured rate, per key."""

from __future__ import annotations

import pytest

from matchcast.service.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_per_key() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token per 0.5 s
    assert buckets.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 60
    assert [buckets.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled up to the burst, not beyond


def test_refused_requests_do_not_drain_the_bucket_further() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.take("k") == 0.0
    waits = [buckets.take("k") for _ in range(5)]
    assert all(w == pytest.approx(1.0) for w in waits)
    clock.now += 1.0
    assert buckets.take("k") == 0.0


def test_zero_rate_means_no_limit_and_memory_is_bounded() -> None:
    assert TokenBuckets(rate=0, burst=1).take("x") == 0.0
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=10, clock=Clock())
    for i in range(100):
        buckets.take(f"k{i}")
    assert len(buckets._buckets) == 10
