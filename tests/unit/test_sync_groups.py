"""The sync sender's flow control: at most ``in_flight`` groups out; whoever arrives meanwhile goes in the next."""

from __future__ import annotations

import asyncio
from typing import Any

from matchcast.api.grouping import SyncGroups


class Recorded(SyncGroups):
    """SyncGroups whose groups go to a list instead of the broker; each is answered when the test says so."""

    def __init__(self, in_flight: int) -> None:
        super().__init__(None, None, None, max_group=256, timeout=5.0, in_flight=in_flight)  # type: ignore[arg-type]
        self.sent: list[list[int]] = []
        self.answer: list[asyncio.Event] = []

    async def _send(self, group: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]) -> None:
        self.sent.append([payload["n"] for payload, _ in group])
        done = asyncio.Event()
        self.answer.append(done)

        async def deliver() -> None:
            await done.wait()
            for payload, fut in group:
                fut.set_result(payload)

        task = asyncio.create_task(deliver())
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)


def test_groups_in_flight_are_capped_and_later_requests_wait_together() -> None:
    async def scenario() -> None:
        groups = Recorded(in_flight=2)
        first = [asyncio.create_task(groups.predict({"n": n})) for n in range(3)]
        await asyncio.sleep(0.01)
        assert groups.sent == [[0, 1, 2]]
        second = asyncio.create_task(groups.predict({"n": 3}))
        await asyncio.sleep(0.01)
        assert groups.sent == [[0, 1, 2], [3]]  # a second group may go while the first is out
        later = [asyncio.create_task(groups.predict({"n": n})) for n in range(4, 10)]
        await asyncio.sleep(0.05)
        assert groups.sent == [[0, 1, 2], [3]]  # two out: the rest wait
        groups.answer[0].set()
        assert [f["n"] for f in await asyncio.gather(*first)] == [0, 1, 2]
        await asyncio.sleep(0.01)
        assert groups.sent[2] == [4, 5, 6, 7, 8, 9]  # everyone who waited, in one group
        groups.answer[1].set()
        groups.answer[2].set()
        assert (await second)["n"] == 3
        assert [f["n"] for f in await asyncio.gather(*later)] == list(range(4, 10))

    asyncio.run(scenario())
