"""Fixtures for lab tests that drive real peers: the ``adb`` binary, SSH boards."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labpeers.adb_device import AdbPeer
from slimlab.lab.virtual.boards import Board, boards, detect_mode
from tests.support import lab_unavailable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AdbServer:
    """A private adb server; ``run`` calls the adb client against it."""

    adb: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 20, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        # stdin is never inherited: `adb shell` would forward the terminal's input.
        return subprocess.run(
            [self.adb, *args], env=self.env, capture_output=True, timeout=timeout,
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
        )

    def state(self, serial: str) -> str | None:
        """The serial's state in `adb devices` ("device", "offline"...), None if not listed."""
        listing = self.run("devices", timeout=10)
        assert listing.returncode == 0, listing.stderr
        for line in listing.stdout.decode().splitlines()[1:]:
            fields = line.split("\t")
            if fields[0] == serial:
                return fields[1]
        return None

    def wait_for_state(self, serial: str, accept: Callable[[str | None], bool], timeout: float) -> str | None:
        """Poll `adb devices` until ``accept(state)``; return the last state seen."""
        deadline = time.monotonic() + timeout
        while not accept(state := self.state(serial)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return state

    def connect(self, serial: str) -> None:
        result = self.run("connect", serial, timeout=10)
        # adb 29 exits 0 even when the connection is refused; the text tells.
        assert b"connected to" in result.stdout, result.stdout + result.stderr
        state = self.wait_for_state(serial, lambda s: s == "device", timeout=10)
        assert state == "device", f"{serial} is {state!r} after adb connect"


@pytest.fixture(scope="session")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    """An adb server on a private port, so other adb users are not disturbed."""
    adb = shutil.which("adb")
    if adb is None:
        lab_unavailable("adb not installed (apt-get install adb)")
    env = dict(os.environ)
    env.pop("ANDROID_SERIAL", None)
    env["ANDROID_ADB_SERVER_PORT"] = str(free_port())
    # adb writes its key (under $ANDROID_SDK_HOME) and a per-port file (under
    # $HOME) into .android/; keep both out of the user's home.
    home = str(tmp_path_factory.mktemp("adb-home"))
    env["HOME"] = env["ANDROID_SDK_HOME"] = home
    server = AdbServer(adb, env)
    started = server.run("start-server", timeout=30)
    assert started.returncode == 0, started.stderr
    try:
        yield server
    finally:
        server.run("kill-server", timeout=30)


@pytest.fixture
def adb_peer(tmp_path: Path, adb_server: AdbServer) -> Iterator[AdbPeer]:
    """A fake device with sandbox ``tmp_path/device``, connected to the private adb server."""
    peer = AdbPeer(tmp_path / "device").start()
    try:
        adb_server.connect(peer.serial)
        yield peer
    finally:
        adb_server.run("disconnect", peer.serial, timeout=10)
        peer.stop()


@contextlib.contextmanager
def _ssh_lab(n: int, tmp_path: Path) -> Iterator[list[Board]]:
    mode = detect_mode()
    if mode.name is None:
        lab_unavailable(mode.reason)
    with boards(n, tmp_path, mode) as made:
        yield made


# Function scope: boards come up in a fraction of a second, and tests that
# cut() a board or kill its sshd must not leak that into the next test.
@pytest.fixture
def ssh_boards(tmp_path: Path) -> Iterator[list[Board]]:
    """Two SSH boards (each in its own network namespace when root)."""
    with _ssh_lab(2, tmp_path) as made:
        yield made


@pytest.fixture
def ssh_board(tmp_path: Path) -> Iterator[Board]:
    with _ssh_lab(1, tmp_path) as (board,):
        yield board
