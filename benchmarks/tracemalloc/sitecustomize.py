"""Look inside the API during a benchmark (BENCHMARKS.md, "What the API's growth is").

On ``PYTHONPATH``, every Python process imports this at start; only ``matchcast api`` acts on it.

- ``MATCHCAST_BENCH_TRACEMALLOC=<folder>``: start ``tracemalloc`` (8 frames) and, on each ``SIGUSR1``, pickle a
  snapshot to ``<folder>/snap-<pid>-<n>.pickle``. Compare two with ``Snapshot.compare_to(other, "lineno")``.
  A block count is not an instance count: each uvicorn ``HttpToolsProtocol`` is two blocks at its lines.
- ``MATCHCAST_BENCH_CONNECTIONS=<file>``: on each ``SIGUSR2``, append a line to ``<file>``: the live
  ``HttpToolsProtocol`` objects (one per HTTP connection), again after a ``gc.collect()``, and the open sockets.
  Costs nothing until signalled.

    MATCHCAST_BENCH_TRACEMALLOC=/tmp/tm PYTHONPATH=benchmarks/tracemalloc \\
        .venv/bin/python benchmarks/bench_serving.py --phases sync --concurrency 256 --soak 480 --home H
    kill -USR1 "$(pgrep -f 'matchcast api --port')"    # once early in the soak, again later
"""

import contextlib
import gc
import itertools
import os
import pickle
import signal
import sys
import tracemalloc

_API = "api" in sys.argv and "--port" in sys.argv
_FOLDER = os.environ.get("MATCHCAST_BENCH_TRACEMALLOC")
_COUNTS = os.environ.get("MATCHCAST_BENCH_CONNECTIONS")

if _API and _FOLDER:
    tracemalloc.start(8)
    _count = itertools.count()

    def _snapshot(signum: int, frame: object) -> None:
        with open(os.path.join(_FOLDER, f"snap-{os.getpid()}-{next(_count)}.pickle"), "wb") as out:
            pickle.dump(tracemalloc.take_snapshot(), out)

    signal.signal(signal.SIGUSR1, _snapshot)

if _API and _COUNTS:

    def _protocols() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "HttpToolsProtocol")

    def _sockets() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        return n

    def _connections(signum: int, frame: object) -> None:
        before = _protocols()
        gc.collect()
        with open(_COUNTS, "a") as out:
            out.write(f"protocols {before} after_gc {_protocols()} sockets {_sockets()}\n")

    signal.signal(signal.SIGUSR2, _connections)
