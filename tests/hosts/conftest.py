"""The hosts topology as a fixture: built once per module, torn down even when building it failed."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.hosts.netns import teardown
from tests.hosts.services import PG_BIN, rabbit_sbin
from tests.hosts.topology import Topology, new_root, remove_root


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "root (to make network namespaces)"
    if shutil.which("ip") is None:
        return "iproute2's ip"
    if rabbit_sbin() is None:
        return "RabbitMQ (/usr/lib/rabbitmq)"
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL ({PG_BIN})"
    if shutil.which("runuser") is None:
        return "runuser"
    return None


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def keep_logs(root: Path, module: str) -> Path:
    """Copy every host's logs (matchcast's, RabbitMQ's, Redis's) to ``test-artifacts/hosts-logs/<module>``."""
    out = ARTIFACTS / "hosts-logs" / module
    shutil.rmtree(out, ignore_errors=True)
    for log in (*root.glob("*/*.log"), *root.glob("*/*/*.out"), *root.glob("*/rabbitmq/log/*.log")):
        target = out / log.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    return out


@pytest.fixture(scope="module")
def hosts(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """Every host of the topology up, both APIs ready; everything removed afterwards (the logs kept in
    ``test-artifacts/hosts-logs`` when a test of the module failed)."""
    missing = _missing()
    need(missing or "", missing is None)
    teardown()  # what an earlier, crashed run may have left
    topo = Topology(new_root())
    failed_before = request.session.testsfailed
    try:
        topo.up()
        print(f"\n[hosts] topology up: {', '.join(f'{k} {v:.0f} s' for k, v in topo.timings.items())}")
        yield topo
    finally:
        topo.down()
        if request.session.testsfailed > failed_before:
            with contextlib.suppress(OSError):
                print(f"\n[hosts] logs kept in {keep_logs(topo.root, request.module.__name__.rsplit('.', 1)[-1])}")
        if os.environ.get("MATCHCAST_KEEP_HOSTS_LOGS") != "1":
            remove_root(topo.root)
