"""Trace the API's Python allocations during a benchmark (BENCHMARKS.md, "What the API's growth is").

On ``PYTHONPATH`` with ``MATCHCAST_BENCH_TRACEMALLOC=<folder>`` set, every Python process imports this at start;
only ``matchcast api`` acts on it: it starts ``tracemalloc`` (8 frames) and, on each ``SIGUSR1``, pickles a
snapshot to ``<folder>/snap-<pid>-<n>.pickle``. Compare two with ``Snapshot.compare_to(other, "lineno")``.

    MATCHCAST_BENCH_TRACEMALLOC=/tmp/tm PYTHONPATH=benchmarks/tracemalloc \\
        .venv/bin/python benchmarks/bench_serving.py --phases sync --concurrency 256 --soak 480 --home H
    kill -USR1 "$(pgrep -f 'matchcast api --port')"    # once early in the soak, again later
"""

import itertools
import os
import pickle
import signal
import sys
import tracemalloc

_FOLDER = os.environ.get("MATCHCAST_BENCH_TRACEMALLOC")

if _FOLDER and "api" in sys.argv and "--port" in sys.argv:
    tracemalloc.start(8)
    _count = itertools.count()

    def _snapshot(signum: int, frame: object) -> None:
        with open(os.path.join(_FOLDER, f"snap-{os.getpid()}-{next(_count)}.pickle"), "wb") as out:
            pickle.dump(tracemalloc.take_snapshot(), out)

    signal.signal(signal.SIGUSR1, _snapshot)
