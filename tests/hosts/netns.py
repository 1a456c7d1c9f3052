"""Hosts of their own on one machine: a network namespace per host, each wired by a veth pair to one bridge.

Every address lives in ``10.77.17.0/24`` on the bridge ``mchbr17``; the test itself talks to the hosts from the
machine's namespace through the bridge's own address (``10.77.17.1``), as an operator's machine on the same
network would. ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over ``/etc/hosts``: that file gives every
host the others' names (RabbitMQ's node names ``rabbit@broker-1`` need them). Cutting a host off is taking its
veth's bridge end down. ``teardown`` (also run at the start, for what a crashed run left) kills every process
in the namespaces and deletes them, the bridge and the hosts files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "mch-"  # namespaces of this suite (and only of it)
BRIDGE = "mchbr17"
SUBNET = "10.77.17"
OPS_ADDRESS = f"{SUBNET}.1"  # the bridge's own address: where the test stands


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip`` with these arguments."""
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def namespace(host: str) -> str:
    """The network namespace of a host."""
    return PREFIX + host


def _veth(host: str) -> str:
    return f"mchv-{host}"[:15]


class Network:
    """Hosts (name -> last octet) on one bridge, each in its own network namespace."""

    def __init__(self, hosts: dict[str, int]) -> None:
        self.hosts = hosts

    def address(self, host: str) -> str:
        """The host's address on the bridge."""
        return f"{SUBNET}.{self.hosts[host]}"

    def up(self) -> None:
        """Create the bridge, the namespaces, their links and hosts files."""
        teardown()
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{OPS_ADDRESS}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        names = "".join(f"{self.address(h)} {h}\n" for h in self.hosts)
        for host in self.hosts:
            ns = namespace(host)
            ip("netns", "add", ns)
            ip("link", "add", _veth(host), "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", _veth(host), "master", BRIDGE)
            ip("link", "set", _veth(host), "up")
            ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")  # a host's own processes (epmd) still talk to themselves
            folder = Path("/etc/netns") / ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(f"127.0.0.1 localhost\n{names}")

    def cut(self, host: str) -> None:
        """Partition a host from every other one (its link to the bridge goes down)."""
        ip("link", "set", _veth(host), "down")

    def heal(self, host: str) -> None:
        """Connect a cut host again."""
        ip("link", "set", _veth(host), "up")

    def exec_args(self, host: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` on ``host``."""
        return ["ip", "netns", "exec", namespace(host), *argv]


def pids(ns: str) -> list[int]:
    """Every process running in a namespace."""
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def kill_namespace(ns: str, timeout: float = 10) -> None:
    """SIGTERM then SIGKILL every process of a namespace (each by its id)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pids(ns) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids(ns):
            return


def _links() -> list[str]:
    """The names of the links of the machine's own namespace."""
    out = ip("-o", "link", "show", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.count(":") >= 2]


def teardown() -> None:
    """Remove every namespace of this suite (killing what runs in it), the bridge and the hosts files."""
    listed = ip("netns", "list", check=False).stdout.split("\n")
    for ns in (line.split()[0] for line in listed if line.strip()):
        if ns.startswith(PREFIX):
            kill_namespace(ns)
            ip("netns", "del", ns, check=False)
    ip("link", "del", BRIDGE, check=False)
    # A namespace's deletion frees its links a moment later (the kernel does it asynchronously): wait for them,
    # or the next run's links of the same names are refused.
    deadline = time.monotonic() + 15
    while left := [name for name in _links() if name.startswith(_veth(""))]:
        for name in left:
            ip("link", "del", name, check=False)
        assert time.monotonic() < deadline, f"links left behind: {left}"
        time.sleep(0.2)
    for folder in Path("/etc/netns").glob(PREFIX + "*") if Path("/etc/netns").exists() else []:
        shutil.rmtree(folder, ignore_errors=True)
