"""Server-sent events on a real ``matchcast api`` process, read with a real HTTP client while a real worker drains
the work: every change arrives, keep-alive comments fill the quiet, a client that disconnects resumes with
``Last-Event-ID``, and the open streams per key are capped (429)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from matchcast.service.wiring import store_for
from tests.conftest import ApiProcess, WorkerProcess, api_key, base_settings

pytestmark = pytest.mark.integration


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a ``text/event-stream`` answer, comments included as ``{"comment": ...}``."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif not line:
            if event:
                yield event
            event = {}
        else:
            field, _, value = line.partition(":")
            event[field] = json.loads(value) if field == "data" else value.strip()


def test_streams_follow_a_batch_and_a_task_while_a_worker_drains_them(
    tmp_path: Path, trained_home: Path, fresh_vhost_url: str, redis_db: int
) -> None:
    settings = base_settings(
        trained_home,
        broker_url=fresh_vhost_url,
        result_backend=f"redis://127.0.0.1:6379/{redis_db}",
        sse_keepalive_s=0.3,
        sse_streams_per_key=3,
    )
    api = ApiProcess(settings, tmp_path / "api.log")
    worker = None
    try:
        api.wait_healthy()
        headers = {"X-API-Key": api_key(settings, "predict")}
        http = httpx.Client(base_url=api.base, headers=headers, timeout=30)
        ids = [m.match_id for m in store_for(settings).all_matches()][-301:]
        batch = http.post("/predict/async/batch", json={"match_ids": ids[:300]}).json()
        own_key = {"Idempotency-Key": f"events-{uuid.uuid4().hex}"}  # not an earlier test's finished task
        task = http.post("/predict/async/", json={"match_id": ids[300]}, headers=own_key).json()
        batch_url, task_url = f"{batch['status_url']}/events", f"{task['status_url']}/events"
        assert http.get(f"/monitoring/batch_status/{uuid.uuid4()}/events").status_code == 404

        with (
            http.stream("GET", batch_url) as follow,
            http.stream("GET", task_url) as single,
            http.stream("GET", batch_url) as leaving,
        ):
            assert follow.headers["content-type"].startswith("text/event-stream")
            stream, task_stream, gone = events(follow), events(single), events(leaving)
            first = next(stream)
            assert first["event"] == "progress" and first["id"] == "0-0"
            assert first["data"]["kind"] == "snapshot" and first["data"]["done"] == 0 and first["data"]["count"] == 300
            assert next(stream) == {"comment": "keep-alive"}  # nothing happens: the stream says it is alive
            assert next(task_stream)["data"]["status"] == "PENDING"
            assert next(gone)["id"] == "0-0"
            over = http.get(batch_url)  # a fourth stream for the same key on this process
            assert over.status_code == 429 and over.json()["type"] == "too_many_streams"
            assert over.headers["retry-after"]
        # All three closed (the client went away): the cap frees up and the process counts none open.
        deadline = time.monotonic() + 5
        while 'sse_open_streams{kind="batch"} 0.0' not in http.get("/metrics").text:
            assert time.monotonic() < deadline, "the closed streams were not released"
            time.sleep(0.1)

        with http.stream("GET", batch_url) as follow, http.stream("GET", task_url) as single:
            stream, task_stream = events(follow), events(single)
            assert next(stream)["data"]["kind"] == "snapshot"
            assert next(task_stream)["data"]["status"] == "PENDING"
            worker = WorkerProcess(settings, f"sse-{uuid.uuid4().hex[:4]}@localhost", tmp_path / "worker.log")
            worker.wait_ready()
            seen: dict[str, str] = {}
            ids_seen: list[str] = []
            kinds: set[str] = set()
            for event in stream:
                if "comment" in event:
                    continue
                if event["event"] == "end":
                    assert event["data"]["counts"] == {"SUCCESS": 300}
                    break
                ids_seen.append(event["id"])
                kinds.add(event["data"]["kind"])
                seen.update({t["task_id"]: t["status"] for t in event["data"]["tasks"]})
            assert set(seen.values()) == {"SUCCESS"} and len(seen) == 300
            assert kinds >= {"started", "tasks"} and len(ids_seen) >= 4  # a start, then each chunk of 100
            assert ids_seen == sorted(ids_seen, key=lambda i: tuple(map(int, i.split("-"))))
            states = [e["data"]["status"] for e in task_stream if e.get("event") == "status"]
            assert states == ["SUCCESS"]

        # A client that went away after the first event resumes: it is sent what it missed, in one event.
        resumed = http.get(batch_url, headers={"Last-Event-ID": ids_seen[1]})
        got = [e for e in events(resumed) if "event" in e]
        assert [e["event"] for e in got] == ["progress", "end"]
        assert got[0]["data"]["kind"] == "resumed" and got[0]["id"] == ids_seen[-1]
        first_chunk = {t for t, s in seen.items()}  # every task changed after the "started" event
        assert {t["task_id"] for t in got[0]["data"]["tasks"]} <= first_chunk
        assert 200 <= len(got[0]["data"]["tasks"]) <= 300 and got[0]["data"]["done"] == 300
        # A finished task's stream: its last state and the end, at once; resuming from it, only the end.
        done = [e for e in events(http.get(task_url)) if "event" in e]
        assert [e["event"] for e in done] == ["status", "end"] and done[0]["id"] == "SUCCESS"
        assert done[0]["data"]["result"]["match_id"] == ids[300]
        again = [e for e in events(http.get(task_url, headers={"Last-Event-ID": "SUCCESS"})) if "event" in e]
        assert [e["event"] for e in again] == ["end"]
    finally:
        if worker is not None:
            worker.stop()
        api.close()
