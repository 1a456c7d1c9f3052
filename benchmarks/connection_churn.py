"""Connection churn against a running API: rounds of 256 new connections, 4 requests each, the API's RSS after each
tenth round (BENCHMARKS.md, "What the API's growth is"). The API need not be trained: it asks ``/health``.

    .venv/bin/python benchmarks/connection_churn.py --api http://127.0.0.1:8000 --pid "$(pgrep -f 'matchcast api')"
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def round_of(api: str, connections: int, requests: int) -> None:
    """``connections`` clients on one session of that many connections, closed at the end (the API sees EOF)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def client() -> None:
            for _ in range(requests):
                async with session.get(f"{api}/health") as resp:
                    resp.raise_for_status()
                    await resp.read()

        await asyncio.gather(*(client() for _ in range(connections)))


async def main(args: argparse.Namespace) -> None:
    print(f"start: RSS {rss_mib(args.pid):.1f} MiB", flush=True)
    for done in range(1, args.rounds + 1):
        await round_of(args.api, args.connections, args.requests)
        if done % 10 == 0:
            await asyncio.sleep(1)
            total = done * args.connections
            print(f"{total:>7,} connections: RSS {rss_mib(args.pid):.1f} MiB", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True)
    p.add_argument("--pid", type=int, required=True, help="the API process (its RSS is read from /proc)")
    p.add_argument("--rounds", type=int, default=80)
    p.add_argument("--connections", type=int, default=256)
    p.add_argument("--requests", type=int, default=4)
    asyncio.run(main(p.parse_args()))
