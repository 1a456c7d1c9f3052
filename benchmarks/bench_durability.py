"""What an append-only result backend costs: sync c64 throughput and async accept with the result backend's
Redis keeping no append-only file, fsyncing it every second (the recipe), and fsyncing on every write.

Each mode is a run of ``bench_serving.py --quick --phases sync async --backend-aof MODE`` on one trained home,
the modes alternating for ``--rounds`` rounds so that the machine's drift spreads over all of them; the table
gives each mode's best round and its ratio to ``no``.

    .venv/bin/python benchmarks/bench_durability.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("no", "everysec", "always")
HERE = Path(__file__).resolve().parent


def run(mode: str, home: Path, out: Path) -> dict[str, float]:
    """One quick serving run with the result backend in ``mode``: its sync c64 and async accept figures."""
    argv = [sys.executable, str(HERE / "bench_serving.py"), "--quick", "--phases", "sync", "async"]
    argv += ["--concurrency", "64", "--home", str(home), "--backend-aof", mode, "--out", str(out)]
    subprocess.run(argv, check=True)
    report = json.loads(out.read_text())
    c64 = report["sync"]["matchcast"]["64"]
    return {
        "sync_c64_rps": c64["throughput_rps"],
        "sync_c64_p99_ms": c64["p99_ms"],
        "accept_per_s": report["async_accept_per_s"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--home", type=Path, help="a trained home to reuse (made once in a temp folder by default)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "durability.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="matchcast-durability-"))
    home = args.home or work / "home"
    rounds: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            rounds[mode].append(run(mode, home, work / f"{mode}.json"))
    best = {m: {k: (min if k.endswith("_ms") else max)(r[k] for r in rs) for k in rs[0]} for m, rs in rounds.items()}
    base = best["no"]
    print(f"{'append-only fsync':<18}{'sync c64 req/s':>16}{'ratio':>8}{'p99 ms':>9}{'accept/s':>11}{'ratio':>8}")
    for mode, fig in best.items():
        print(
            f"{mode:<18}{fig['sync_c64_rps']:>16.0f}{fig['sync_c64_rps'] / base['sync_c64_rps']:>8.2f}"
            f"{fig['sync_c64_p99_ms']:>9.1f}{fig['accept_per_s']:>11.0f}"
            f"{fig['accept_per_s'] / base['accept_per_s']:>8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": rounds, "best": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
