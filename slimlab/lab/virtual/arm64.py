"""``slimlab board``: an emulated arm64 board on this host, measured over SSH like a real one.

``up NAME --cpu CPU`` unpacks the cached tree (:mod:`slimlab.lab.virtual.rootfs`) for the board,
gives it its own /proc, a read-only /sys, a private /dev and an arm64 /proc/cpuinfo for the
emulated core, and starts the tree's own arm64 sshd under qemu-user in a network namespace of
its own (:mod:`slimlab.lab.virtual.netns`), with fresh host and client keys. Then it writes the
board's inventory entry, with a known_hosts file of its own, to ``devices/<NAME>.yaml``: the
entry declares the board emulated and turns device-side evaluation on. ``down NAME`` stops and
unmounts everything, deletes the tree and the entry, and checks that nothing is left.

The models really run in the ARM builds of the runtimes, on the instructions the chosen core
has (fp16 arithmetic, dot product, i8mm, SVE...): what they compute is the board's. How long
they take is not: qemu translates every instruction, so a latency is 20-650 times a device's.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from slimlab.errors import SlimlabError
from slimlab.lab import devices
from slimlab.lab.payload import cache_dir
from slimlab.lab.virtual import netns, rootfs
from slimlab.lab.virtual.boards import SshKeys, connect, run_command, sshd_config, wait_listening

log = logging.getLogger(__name__)

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
STATE = "board.json"
SSHD_LOG = "var/log/slimlab-sshd.log"
CPUINFO = "opt/slimlab-board/cpuinfo"
ENTRY_HEADER = "# Written by `slimlab board up`; `slimlab board down {name}` removes it.\n"
START_TIMEOUT_S = 60.0  # sshd under qemu serves its banner after about a second


def default_cache() -> Path:
    return Path(os.environ.get("SLIMLAB_BOARD_CACHE") or cache_dir() / "boards")


@dataclass
class Board:
    """What ``up`` made, kept in ``<cache>/<name>/board.json`` so that ``down`` and ``status`` find it."""

    name: str
    cpu: str
    folder: str
    entry: str  # the inventory file written for it
    address: str | None = None
    netns: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.folder) / "root"

    def save(self) -> None:
        (Path(self.folder) / STATE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    def keys(self) -> SshKeys:
        etc = self.root / "etc/ssh/slimlab"
        return SshKeys(etc / "ssh_host_ed25519_key", Path(self.folder) / "id_ed25519", etc / "authorized_keys",
                       Path(self.folder) / "known_hosts")


def boards(cache: Path) -> list[Board]:
    return [Board(**json.loads(path.read_text())) for path in sorted(cache.glob(f"*/{STATE}"))]


def check_cpu(cpu: str) -> None:
    """A core qemu-aarch64 knows; its properties (``max,sme=off``) are checked when the tree first runs it."""
    listing = subprocess.run(["qemu-aarch64-static", "-cpu", "help"], capture_output=True, text=True).stdout
    known = [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]
    if cpu.split(",")[0] not in known:
        raise SlimlabError(f"qemu-aarch64 knows no CPU {cpu.split(',')[0]!r}; it knows {', '.join(known)} "
                           "(README: the QEMU_CPU choices)")


def cpuinfo(board: Board) -> None:
    """An arm64 /proc/cpuinfo for the emulated core, made inside the tree, bind-mounted read-only over its own."""
    guest = board.root / "opt/slimlab-board"
    guest.mkdir(parents=True, exist_ok=True)
    (guest / "cpuinfo.py").write_bytes((files("slimlab.lab.virtual") / "guest" / "cpuinfo.py").read_bytes())
    text = rootfs.in_root(board.root, board.cpu, "python3", "/opt/slimlab-board/cpuinfo.py", str(os.cpu_count()))
    (board.root / CPUINFO).write_text(text)
    subprocess.run(["mount", "--bind", "-o", "ro", str(board.root / CPUINFO), str(board.root / "proc/cpuinfo")],
                   check=True)


def start_sshd(board: Board, link: netns.Link) -> None:
    """The tree's arm64 sshd in the board's namespace, daemonised (it outlives ``up``)."""
    keys = board.keys()
    keys.host_key.parent.mkdir(parents=True, exist_ok=True)
    keys.write(board.name, link.board_ip, 22)
    inside = "/etc/ssh/slimlab"
    # sshd builds each session's environment from scratch: without SetEnv, the session's programs would run
    # under qemu's default core ("max"), whatever sshd itself was started with.
    extra = (f"SetEnv QEMU_CPU={board.cpu}", "UseDNS no",
             "MaxStartups 30:30:100")  # the default 10 drops parallel handshakes, which are slow under qemu
    (keys.host_key.parent / "sshd_config").write_text(sshd_config(
        link.board_ip, 22, f"{inside}/ssh_host_ed25519_key", f"{inside}/authorized_keys", "/run/slimlab-sshd.pid",
        extra))
    (board.root / "run/sshd").mkdir(parents=True, exist_ok=True)
    (board.root / SSHD_LOG).write_text("")
    # nsenter, not `ip netns exec`: that would also give sshd a private copy of the mount namespace.
    subprocess.run(["nsenter", f"--net=/run/netns/{link.netns}", "--", "chroot", str(board.root), "/usr/sbin/sshd",
                    "-f", f"{inside}/sshd_config", "-E", f"/{SSHD_LOG}"], env=rootfs.guest_env(board.cpu),
                   check=True, timeout=START_TIMEOUT_S)
    wait_listening(board.name, link.board_ip, 22, START_TIMEOUT_S, lambda: bool(rootfs.procs_in_root(board.root)),
                   board.root / SSHD_LOG)


def entry(board: Board, evaluate: int) -> dict:
    keys = board.keys()
    return {board.name: {
        "transport": "ssh",
        "runner": "python",
        "runtimes": ["tflite", "ncnn", "mnn", "onnx"],
        "workdir": "/tmp/slimlab",  # absolute: the transport runs payloads from inside it
        "emulated": {"qemu_cpu": board.cpu},
        "ssh": {"host": board.address, "port": 22, "user": "root", "key_file": str(keys.client_key),
                "known_hosts": str(keys.known_hosts), "connect_timeout_s": 30},
        "python": {"interpreter": f"{rootfs.VENV}/bin/python", "evaluate": evaluate},
        "timeout_s": 3600,  # emulated inference is 20-650x slower than a device's
    }}


def up(name: str, cpu: str, inventory: Path, cache: Path, evaluate: int) -> Board:
    """Start board ``name`` emulating ``cpu``; its inventory entry goes to ``inventory/<name>.yaml``."""
    if not NAME.fullmatch(name):
        raise SlimlabError(f"board name {name!r}: use lower-case letters, digits and '-' (at most 31)")
    rootfs.require()
    folder, source = cache / name, rootfs.tarball(cache)
    if (folder / STATE).exists():
        raise SlimlabError(f"board {name!r} is up already; `slimlab board down {name}` first")
    if folder.exists():
        raise SlimlabError(f"{folder} exists but holds no board; `slimlab board down {name}` clears it")
    if not source.is_file():
        raise SlimlabError(f"no arm64 tree for these runtime versions in {cache}: run `slimlab board build` first")
    path = inventory / f"{name}.yaml"
    if path.exists():
        raise SlimlabError(f"{path} exists: a device of that name is in the inventory already")
    rootfs.ensure_binfmt()
    check_cpu(cpu)
    began = time.monotonic()
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise SlimlabError(f"board {name!r} is being started by another `slimlab board up`") from None
    board = Board(name, cpu, str(folder.resolve()), str(path.resolve()))
    board.save()
    with ExitStack() as failed:
        failed.callback(down, name, cache)  # whatever was made is taken down again
        rootfs.restore(source, board.root)
        restored = time.monotonic() - began
        rootfs.in_root(board.root, cpu, "/bin/true")  # qemu refuses a bad property (max,foo=1) here
        rootfs.mount_base(board.root)
        cpuinfo(board)
        with netns.lab_lock():
            link = netns.add_link(lambda octet: f"slimlab-arm{octet}-{name}")
        board.address, board.netns = link.board_ip, link.netns
        board.save()
        start_sshd(board, link)
        with connect(board.address, 22, "root", board.keys(), timeout=30) as client:
            seen = run_command(client, "echo $(uname -m) $QEMU_CPU", timeout=60).stdout.split()
        if seen != ["aarch64", cpu]:
            raise SlimlabError(f"board {name} answered {' '.join(seen)!r}, expected 'aarch64 {cpu}'")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ENTRY_HEADER.format(name=name) + yaml.safe_dump({"devices": entry(board, evaluate)},
                                                                        sort_keys=False))
        devices.load_inventory(path)  # the entry must load as the workflow will load it
        failed.pop_all()
    log.info("board %s up at %s, QEMU_CPU=%s: tree restored in %.1f s, answering after %.1f s; entry %s",
             name, board.address, cpu, restored, time.monotonic() - began, path)
    return board


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """The pids still alive after ``timeout``; a zombie counts as gone (init reaps orphans only every second or so)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in "ZX":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def links(name: str) -> list[netns.Link]:
    """The board's namespace (named after its octet and name), found without state: ``down`` clears half-made ones."""
    listing = netns.command(["ip", "netns", "list"]).stdout
    return [netns.Link(match[0], int(match[1]))
            for match in re.findall(rf"^(slimlab-arm(\d+)-{re.escape(name)})\b", listing, re.M)]


def leftovers(name: str, root: Path) -> list[str]:
    return [*(f"process {pid}" for pid in rootfs.procs_in_root(root)),
            *(f"mount {point}" for point in rootfs.mounts_under(root)),
            *(f"network namespace {link.netns}" for link in links(name))]


def down(name: str, cache: Path) -> None:
    """Stop board ``name``: processes, mounts, network, its tree and its inventory entry; then check it is all gone."""
    folder = cache / name
    state = folder / STATE
    board = Board(**json.loads(state.read_text())) if state.is_file() else None
    root = folder / "root"
    found = links(name)
    if board is None and not found and not folder.exists():
        log.info("no board %s is up (slimlab board status lists them)", name)
        return
    pids = sorted({*rootfs.procs_in_root(root), *(pid for link in found for pid in netns.netns_pids(link.netns))})
    netns.kill(pids)
    wait_gone(pids)
    rootfs.unmount_all(root)
    for link in found:
        netns.remove_link(link)
    left = leftovers(name, root)
    if left:
        raise SlimlabError(f"board {name}: still there after down: {', '.join(left)}")
    if board is not None:
        written = Path(board.entry)
        if written.is_file() and written.read_text().startswith(ENTRY_HEADER.format(name=name)):
            written.unlink()
    if folder.exists():
        shutil.rmtree(folder)
    log.info("board %s down: %d process(es) stopped, nothing mounted or running", name, len(pids))


def status(cache: Path) -> list[dict]:
    """Every board ``up`` made here, and whether its sshd still runs."""
    return [{"name": board.name, "cpu": board.cpu, "address": board.address, "entry": board.entry,
             "running": bool(rootfs.procs_in_root(board.root)), "mounts": len(rootfs.mounts_under(board.root))}
            for board in boards(cache)]
