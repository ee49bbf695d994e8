"""Network namespaces for boards on this host: each behind a veth pair, on a /30 of 10.213.0.0/16.

Shared by the SSH test boards (:mod:`slimlab.lab.virtual.boards`) and the emulated
arm64 board (:mod:`slimlab.lab.virtual.arm64`): one allocator, under one lock, so
their subnets never collide.
"""

import contextlib
import fcntl
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_LOCK = Path("/run/slimlab-lab.lock")
# Worse than the kernel's connected route (metric 0), so it only applies while
# that route is gone: a board's /30 must never fall through to the default gateway.
_BLACKHOLE_METRIC = "4213"


def command(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"{argv} exited {result.returncode}: {result.stderr.strip()}")
    return result


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def netns_pids(netns: str) -> list[int]:
    out = command(["ip", "netns", "pids", netns], check=False).stdout
    return [int(p) for p in out.split()]


@dataclass(frozen=True)
class Link:
    """A network namespace joined to the host by a veth pair: the host at 10.213.<octet>.1, the board (eth0) at .2."""

    netns: str
    octet: int

    @property
    def host_ip(self) -> str:
        return f"10.213.{self.octet}.1"

    @property
    def board_ip(self) -> str:
        return f"10.213.{self.octet}.2"


def add_link(netns_for: Callable[[int], str]) -> Link:
    """A new namespace named ``netns_for(octet)`` behind a veth pair; call it under :func:`lab_lock`.
    On failure nothing is left behind."""
    octet = _free_octet()  # the previous board's route and veth already mark its octet as used
    link, host_if = Link(netns_for(octet), octet), f"sl{octet}h"
    command(["ip", "netns", "add", link.netns])
    try:
        for argv in (
            # The board end is created inside the namespace, so deleting either end
            # (or the namespace) removes the pair.
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", link.netns],
            ["ip", "route", "add", "blackhole", f"10.213.{octet}.0/30", "metric", _BLACKHOLE_METRIC],
            ["ip", "addr", "add", f"{link.host_ip}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", link.netns, "addr", "add", f"{link.board_ip}/30", "dev", "eth0"],
            ["ip", "-n", link.netns, "link", "set", "lo", "up"],
            ["ip", "-n", link.netns, "link", "set", "eth0", "up"],
        ):
            command(argv)
    except Exception:
        remove_link(link)
        raise
    return link


def remove_link(link: Link) -> None:
    """Kill everything in the namespace and delete it with its veth and safety route."""
    kill(netns_pids(link.netns))
    command(["ip", "link", "del", f"sl{link.octet}h"], check=False)
    command(["ip", "route", "del", "blackhole", f"10.213.{link.octet}.0/30", "metric", _BLACKHOLE_METRIC], check=False)
    command(["ip", "netns", "del", link.netns], check=False)


def _free_octet() -> int:
    """A third octet whose 10.213.X.0/30 and sl<X>h veth nobody uses yet."""
    routes = command(["ip", "-4", "route", "show", "table", "all"]).stdout
    links = command(["ip", "-o", "link", "show"]).stdout
    for octet in range(256):
        if (
            f"10.213.{octet}." not in routes
            and not re.search(rf"^\d+: sl{octet}h[@:]", links, re.M)
        ):
            return octet
    raise RuntimeError("no free 10.213.X.0/30 subnet left")


@contextlib.contextmanager
def lab_lock() -> Iterator[None]:
    """Serialise subnet allocation and sweeping between concurrent runs."""
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
