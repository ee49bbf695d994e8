"""Real OpenSSH "boards" on this host, for trying the lab and for its tests.

Each board is an ``sshd`` with its own host key, client key and known_hosts.

* ``netns`` mode (root + ``ip netns``): every board lives in its own network
  namespace behind a veth pair, at 10.213.<octet>.2/30, so ``cut()`` can drop
  it off the network the way a board loses WiFi: packets vanish, connections
  hang until their timeouts.
* ``loopback`` mode (sshd but no namespaces, e.g. not root): sshd on
  127.0.0.1 with a free port; ``cut()`` kills sshd, so connections are
  refused or reset instead of hanging.

``SLIMLAB_LAB_MODE=loopback`` forces loopback mode, to exercise it as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slimlab.lab.virtual.netns import Link, add_link, command, kill, lab_lock, remove_link

SSHD = "/usr/sbin/sshd"  # sshd refuses to run unless started by absolute path
NETNS_PREFIX = "slimlab-b"
_NETNS_RE = re.compile(rf"^{NETNS_PREFIX}(\d+)-(\d+)$")
_START_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


class LabUnavailable(RuntimeError):
    """No sshd to run boards with: callers skip (the lab tests) or give up."""


@dataclass(frozen=True)
class LabMode:
    name: str | None  # "netns", "loopback", or None when no board can run
    reason: str  # why this mode (and not a better one) was chosen


def detect_mode() -> LabMode:
    if not os.access(SSHD, os.X_OK):
        return LabMode(None, f"{SSHD} not installed (apt-get install openssh-server)")
    if os.environ.get("SLIMLAB_LAB_MODE") == "loopback":
        return LabMode("loopback", "forced by SLIMLAB_LAB_MODE=loopback")
    if os.geteuid() != 0:
        return LabMode("loopback", "not root: network namespaces need root, using sshd on 127.0.0.1")
    if shutil.which("ip") is None:
        return LabMode("loopback", "iproute2 `ip` not installed: no network namespaces")
    probe = f"slimlab-probe-{os.getpid()}"
    added = command(["ip", "netns", "add", probe], check=False)
    if added.returncode != 0:
        return LabMode("loopback", f"`ip netns add` failed: {added.stderr.strip()}")
    command(["ip", "netns", "del", probe])
    return LabMode("netns", "root with ip netns")


def _die_with_parent() -> None:
    # If the process that started sshd is SIGKILLed, sshd must not outlive it (stale netns are swept later).
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, just not ours
    return True


def _descendants(pid: int) -> list[int]:
    """pid's children, grandchildren, ...: sshd forks a process tree per session."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sweep_stale_netns() -> list[str]:
    """Delete slimlab-b<octet>-<pid> namespaces whose creating process is dead."""
    removed = []
    for line in command(["ip", "netns", "list"]).stdout.splitlines():
        name = line.partition(" ")[0]  # lines read "name (id: N)"
        match = _NETNS_RE.match(name)
        if match and not _pid_alive(int(match.group(2))):
            remove_link(Link(name, int(match.group(1))))
            removed.append(name)
    return removed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)  # sshd rejects group/world-readable host keys


def _new_ed25519(path: Path, comment: str) -> str:
    """Write an OpenSSH private key to path and return its public key line."""
    key = Ed25519PrivateKey.generate()
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"


@dataclass(frozen=True)
class SshKeys:
    """A board's key files: its host key, the client key that logs in, and the client's known_hosts."""

    host_key: Path
    client_key: Path
    authorized_keys: Path
    known_hosts: Path

    def write(self, name: str, address: str, port: int) -> None:
        """Fresh host and client keys; known_hosts names the host key the ways clients look it up."""
        self.authorized_keys.write_text(_new_ed25519(self.client_key, f"slimlab-client@{name}") + "\n")
        host_pub = _new_ed25519(self.host_key, f"slimlab-host@{name}").rsplit(" ", 1)[0]
        names = [f"[{address}]:{port}"]
        if port == 22:  # clients look port-22 hosts up by the bare address
            names.append(address)
        self.known_hosts.write_text("".join(f"{n} {host_pub}\n" for n in names))


def sshd_config(address: str, port: int, host_key: str, authorized_keys: str, pid_file: str,
                extra: tuple[str, ...] = ()) -> str:
    """A key-only sshd config; paths as sshd sees them."""
    return "\n".join([
        f"ListenAddress {address}:{port}",
        f'HostKey "{host_key}"',
        f'AuthorizedKeysFile "{authorized_keys}"',
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # keys live in the board's own folder, not ~/.ssh
        f'PidFile "{pid_file}"',
        "Subsystem sftp internal-sftp",  # no dependence on sftp-server's path
        "PrintMotd no",
        *extra,
        "",
    ])


def wait_listening(name: str, address: str, port: int, timeout: float, running: Callable[[], bool],
                   log: Path) -> None:
    """Until sshd accepts connections at address:port; its log goes into the error if it dies or never does."""
    deadline = time.monotonic() + timeout
    while True:
        if not running():
            raise RuntimeError(f"{name}: sshd is not running:\n{log.read_text()}")
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: {address}:{port} unreachable after {timeout}s:\n"
                                   f"{log.read_text()}") from None
            time.sleep(0.05)


def connect(address: str, port: int, user: str, keys: SshKeys, timeout: float,
            known_hosts: Path | None = None) -> paramiko.SSHClient:
    """A paramiko client logged in with the board's key, checking its host key."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(str(known_hosts or keys.known_hosts))
    try:
        client.connect(
            address, port=port, username=user,
            key_filename=str(keys.client_key), look_for_keys=False, allow_agent=False,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
        )
    except Exception:
        client.close()
        raise
    return client


def run_command(client: paramiko.SSHClient, command: str, timeout: float) -> subprocess.CompletedProcess:
    """Run command over an open connection; stdout/stderr decoded as text."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return subprocess.CompletedProcess(command, stdout.channel.recv_exit_status(), out, err)


class Board:
    """One sshd reachable at (address, port) with its own keys and known_hosts."""

    def __init__(self, name: str, workdir: Path, mode: LabMode, address: str, port: int,
                 client_address: str, netns: str | None = None):
        self.name = name
        self.workdir = workdir
        self.mode = mode
        self.address = address
        self.port = port
        self.client_address = client_address  # where the board sees our connections come from
        self.netns = netns
        self.user = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.keys = SshKeys(workdir / "ssh_host_ed25519_key", workdir / "id_ed25519", workdir / "authorized_keys",
                            workdir / "known_hosts")
        self.client_key, self.known_hosts = self.keys.client_key, self.keys.known_hosts
        self.sshd_config = workdir / "sshd_config"
        self.sshd_log = workdir / "sshd.log"
        self._sshd: subprocess.Popen | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keys.write(name, address, port)
        self.sshd_config.write_text(sshd_config(address, port, str(self.keys.host_key), str(self.keys.authorized_keys),
                                                str(workdir / "sshd.pid")))

    def __repr__(self) -> str:
        return f"Board({self.name!r}, {self.address}:{self.port}, mode={self.mode.name})"

    def ssh_config_entry(self) -> dict:
        return {
            "host": self.address,
            "port": self.port,
            "user": self.user,  # root, unless the lab fell back to non-root loopback
            "key_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
        }

    # --- sshd -------------------------------------------------------------

    def start_sshd(self) -> None:
        if self._sshd is not None and self._sshd.poll() is None:
            raise RuntimeError(f"{self.name}: sshd already running")
        argv = [SSHD, "-D", "-e", "-f", str(self.sshd_config)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]  # execs sshd: same pid
        if os.geteuid() == 0:  # root sshd chroots its pre-auth child here
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with self.sshd_log.open("ab") as log:
            self._sshd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.wait_reachable()

    def kill_sshd(self) -> None:
        """Kill sshd and its sessions, like pulling the board's power."""
        if self._sshd is None:
            return
        kill([self._sshd.pid, *_descendants(self._sshd.pid)])
        self._sshd.wait(timeout=5)
        self._sshd = None

    def wait_reachable(self, timeout: float = _START_TIMEOUT) -> None:
        wait_listening(self.name, self.address, self.port, timeout,
                       lambda: self._sshd is not None and self._sshd.poll() is None, self.sshd_log)

    # --- network ----------------------------------------------------------

    def cut(self) -> None:
        """Drop the board off the network."""
        if self.netns:
            # Down the board's end: the host keeps its route (now "linkdown"),
            # so packets are silently dropped rather than refused.
            command(["ip", "-n", self.netns, "link", "set", "eth0", "down"])
        else:
            self.kill_sshd()

    def restore(self) -> None:
        if self.netns:
            command(["ip", "-n", self.netns, "link", "set", "eth0", "up"])
            self.wait_reachable()
        else:
            self.start_sshd()

    # --- SSH client -------------------------------------------------------

    def connect(self, timeout: float = 3.0, known_hosts: Path | None = None) -> paramiko.SSHClient:
        return connect(self.address, self.port, self.user, self.keys, timeout, known_hosts)

    def run(self, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """Run command on the board over SSH; stdout/stderr decoded as text."""
        with self.connect() as client:
            return run_command(client, command, timeout)


def _add_netns_board(name: str, workdir: Path, mode: LabMode, stack: contextlib.ExitStack) -> Board:
    link = add_link(lambda octet: f"{NETNS_PREFIX}{octet}-{os.getpid()}")
    stack.callback(remove_link, link)
    return Board(name, workdir, mode, link.board_ip, 22, link.host_ip, netns=link.netns)


@contextlib.contextmanager
def boards(n: int, tmp_path: Path, mode: LabMode | None = None) -> Iterator[list[Board]]:
    """Bring up n boards; tear all of them down on exit, even after errors."""
    mode = mode or detect_mode()
    if mode.name is None:
        raise LabUnavailable(mode.reason)
    with contextlib.ExitStack() as stack:
        made: list[Board] = []
        if mode.name == "netns":
            with lab_lock():
                sweep_stale_netns()
                for i in range(n):
                    made.append(_add_netns_board(f"board{i}", tmp_path / f"board{i}", mode, stack))
        else:
            for i in range(n):
                made.append(
                    Board(f"board{i}", tmp_path / f"board{i}", mode, "127.0.0.1", _free_port(), "127.0.0.1")
                )
        for board in made:
            stack.callback(board.kill_sshd)
            board.start_sshd()
        yield made
