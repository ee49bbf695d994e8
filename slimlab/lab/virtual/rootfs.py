"""The emulated arm64 board's root file system: Debian arm64 with slimlab's runtimes, built once and cached.

``build`` debootstraps Debian bookworm for arm64 (minbase, with python3 and openssh-server) from
the mirror apt already uses, then installs the payload's runtimes into ``/opt/slimlab-venv`` at
the host venv's versions. Their aarch64 wheels are downloaded on the host and installed offline:
pip's resolver under qemu would take minutes. The tree is packed into a tarball named after
those versions, so a changed pin builds a new one and an unchanged one is reused.

Every aarch64 program in the tree runs under qemu-user through binfmt_misc, registered with the
F flag: the kernel holds the interpreter open, so the tree needs no qemu binary of its own.
"""

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from slimlab.errors import SlimlabError
from slimlab.lab.virtual.netns import kill

log = logging.getLogger(__name__)

SUITE = "bookworm"
VENV = "/opt/slimlab-venv"
RUNTIMES = ("numpy", "ai-edge-litert", "ncnn", "MNN", "onnxruntime")  # what the payload imports
# Host tools, and the Debian package that has each.
TOOLS = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support",
         "zstd": "zstd", "nsenter": "util-linux", "ip": "iproute2"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Everything a build leaves that must not go into the tarball: per-board secrets and caches.
LEFTOVERS = ("tmp/wheels", "etc/ssh/ssh_host_*", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages",
             "root/.cache", "var/log/*.log")


def missing() -> str | None:
    """Why this host cannot run the board, or None."""
    if os.geteuid() != 0:
        return "the arm64 board needs root (chroot, mounts, network namespaces)"
    absent = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if absent:
        return f"missing host tools: apt-get install {' '.join(absent)}"
    return None


def require() -> None:
    problem = missing()
    if problem:
        raise SlimlabError(problem)


def ensure_binfmt() -> None:
    """qemu-aarch64 registered with binfmt_misc, with the F flag (Debian's postinst skips it without systemd)."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists():
        (BINFMT / "register").write_text(Path("/usr/lib/binfmt.d/qemu-aarch64.conf").read_text())
    text = entry.read_text()
    if not text.startswith("enabled"):
        entry.write_text("1")
    if not re.search(r"^flags:.*F", text, re.M):
        raise SlimlabError(f"{entry} is registered without the F flag: the chroot would need qemu inside")


def guest_env(cpu: str) -> dict:
    """A clean environment for the tree's programs (the host's PIP_* and the like never reach it)."""
    return {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": cpu}


def in_root(root: Path, cpu: str, *argv: str, timeout: float = 600) -> str:
    """Run an aarch64 program in the tree under qemu's ``cpu``; its stdout, or SlimlabError with its stderr."""
    done = subprocess.run(["chroot", str(root), *argv], env=guest_env(cpu), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SlimlabError(f"in the arm64 tree, {' '.join(argv[:3])} ... exited {done.returncode}: {tail}")
    return done.stdout


# --- mounts and processes -------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, deepest first."""
    root_text, found = str(root), []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\(\d{3})", lambda m: chr(int(m[1], 8)), line.split()[4])  # \040 is a space
        if point == root_text or point.startswith(root_text + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def mount_base(root: Path, sysfs: bool = True) -> None:
    """The tree's own /proc, a read-only /sys, and a private /dev: no host device or rbind to untangle later.

    Without the board's arm64 /proc/cpuinfo on top, /sys must stay out: with it, the cpuinfo library in LiteRT
    and onnxruntime goes on to parse the host's x86 /proc/cpuinfo, and crashes."""
    mounts = [["-t", "proc", "-o", "nosuid,nodev,noexec", "slimlab-arm-proc", "proc"],
              ["-t", "tmpfs", "-o", "mode=0755,nosuid,size=64k", "slimlab-arm-dev", "dev"]]
    if sysfs:
        mounts.append(["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "slimlab-arm-sys", "sys"])
    for *options, target in mounts:
        subprocess.run(["mount", *options, str(root / target)], check=True)
    dev = root / "dev"
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
                               ("tty", 5, 0)):
        os.mknod(dev / name, 0o20666, os.makedev(major, minor))
        (dev / name).chmod(0o666)
    for folder in ("pts", "shm"):
        (dev / folder).mkdir()
    subprocess.run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "slimlab-arm-devpts",
                    str(dev / "pts")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "slimlab-arm-shm", str(dev / "shm")],
                   check=True)
    for link, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        (dev / link).symlink_to(target)


def unmount_all(root: Path) -> None:
    """Unmount everything at or below root, deepest first; a busy mount gets a few tries, then a lazy unmount."""
    for _ in range(3):
        for point in mounts_under(root):
            subprocess.run(["umount", point], capture_output=True)
        if not mounts_under(root):
            return
        time.sleep(0.5)
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts_under(root):
        raise SlimlabError(f"still mounted under {root}: {', '.join(mounts_under(root))}")


def procs_in_root(root: Path) -> list[int]:
    """Processes whose root directory is the tree: qemu-run ones show the interpreter, not the tree, in their
    command line, so only /proc/PID/root finds them."""
    found, target = [], str(root.resolve())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == target:
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or a kernel thread
    return found


# --- build and restore ----------------------------------------------------------------------


def pins() -> list[str]:
    """The payload's runtimes at the versions this venv has."""
    return [f"{name}=={version(name)}" for name in RUNTIMES]


def tarball(cache: Path) -> Path:
    """The cached tree for this venv's runtime versions."""
    key = hashlib.sha256(" ".join([SUITE, *pins()]).encode()).hexdigest()[:12]
    return cache / f"arm64-{SUITE}-{key}.tar.zst"


def apt_mirror() -> str:
    """The Debian mirror this machine's apt sources name for the main archive (not the security one)."""
    sources = Path("/etc/apt")
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
            if match:
                return match[1]
    return "http://deb.debian.org/debian"


def download_wheels(folder: Path, python: str) -> None:
    """aarch64 wheels of the runtimes for the guest's Python; shared dependencies at the host venv's versions."""
    platforms = ["manylinux2014_aarch64", "linux_aarch64", *(f"manylinux_2_{v}_aarch64" for v in range(17, 37))]
    argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python, "-d", str(folder), *(f"--platform={p}" for p in platforms)]
    # The host's find-links and constraints are for x86 wheels; the freeze below stands in for the latter.
    env = {**os.environ, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    constraints = folder.with_suffix(".constraints")
    constraints.write_text("\n".join(line for line in freeze.splitlines() if re.fullmatch(r"[\w.-]+==\S+", line)))
    done = subprocess.run([*argv, "-c", str(constraints), *pins()], env=env, capture_output=True, text=True)
    if done.returncode != 0:  # a host-only pin the runtimes' dependencies cannot meet on aarch64
        log.info("download with the host venv's versions failed; with the runtimes' pins alone")
        done = subprocess.run([*argv, *pins()], env=env, capture_output=True, text=True)
    constraints.unlink()
    if done.returncode != 0:
        raise SlimlabError(f"pip download of the aarch64 wheels failed: {done.stderr.strip().splitlines()[-1:]}")


def build(cache: Path, mirror: str | None = None, force: bool = False) -> Path:
    """The cached tarball, built first if there is none (or ``force``)."""
    target = tarball(cache)
    if target.is_file() and not force:
        log.info("%s is cached (--force rebuilds it)", target)
        return target
    require()
    ensure_binfmt()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    root, began = work / "root", time.monotonic()
    try:
        mirror = mirror or apt_mirror()
        log.info("debootstrap %s arm64 from %s", SUITE, mirror)
        packages = "python3,python3-venv,python3-pip,openssh-server,ca-certificates"
        done = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={packages}", SUITE,
                               str(root), mirror], capture_output=True, text=True)
        if done.returncode != 0:
            raise SlimlabError(f"debootstrap failed: {done.stdout.strip().splitlines()[-3:]}")
        log.info("debootstrap done after %.0f s; installing %s", time.monotonic() - began, " ".join(pins()))
        mount_base(root, sysfs=False)
        python = in_root(root, "cortex-a72", "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
        download_wheels(root / "tmp/wheels", python.strip())
        in_root(root, "cortex-a72", "python3", "-m", "venv", VENV)
        in_root(root, "cortex-a72", f"{VENV}/bin/pip", "install", "-q", "--no-index", "--no-cache-dir",
                "--disable-pip-version-check", "--find-links", "/tmp/wheels", *pins())
        imports = "import numpy, ncnn, MNN, onnxruntime, ai_edge_litert.interpreter"
        in_root(root, "cortex-a72", f"{VENV}/bin/python", "-c", imports)
        freeze = in_root(root, "cortex-a72", f"{VENV}/bin/pip", "freeze", "--disable-pip-version-check")
        (root / "etc/slimlab-board-release").write_text(f"debootstrap {SUITE} arm64 minbase from {mirror}\n{freeze}")
        unmount_all(root)
        for pattern in LEFTOVERS:
            for path in root.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        log.info("packing %s", target.name)
        part = target.with_name(target.name + ".part")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--acls", "-I", "zstd -T0 -6 -q",
                        "-cf", str(part), "."], check=True)
        part.rename(target)
        log.info("built %s (%.0f MB) in %.0f s", target, target.stat().st_size / 1e6, time.monotonic() - began)
        return target
    finally:
        kill(procs_in_root(root))
        unmount_all(root)
        shutil.rmtree(work)


def restore(source: Path, root: Path) -> None:
    """Unpack the tarball into a new folder ``root``."""
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--acls", "-I", "zstd -T0 -q", "-xpf",
                    str(source)], check=True)
