"""Pay start-up once per machine: fork servers for the commands that workflow jobs run.

A workflow job (``slimlab run-step``, ``bench`` or ``mark-failed``) asks a per-user
server on this host (a *zygote*) to fork a child that runs its command. Each zygote
imported slimlab and its built-in plugins once, and the ``tensorflow`` kind, which
serves the steps that load or make a Keras model, imported TensorFlow, tf_keras and
tfmot too; the ``plain`` kind serves the rest and never imports TensorFlow. A zygote
runs nothing itself, so each child starts with those modules loaded and nothing else
shared. The child gets the job's own standard input, output and error (passed over
the Unix socket), its working directory, environment and arguments: its log is the
job's log, a crash or a leak stays in it, and its exit status is the job's. Snakemake,
or Slurm on a cluster node, sees an ordinary job. If the job is killed, the child
notices the closed connection and dies with it. Plugins are registered in each child
(its own working directory decides which plugin files load).

A zygote starts on first use, detached, and exits after ``IDLE_S`` seconds without a
request, or when code it loaded changed on disk (:func:`sources`): that job runs in its
own process and the next one starts a fresh zygote. Its socket is named after its kind,
the Python that runs it and the job's namespaces, so a new environment (or PYTHONPATH) or
a job in another network namespace gets new zygotes; the child takes the job's umask,
cores and priority too.
``SLIMLAB_ZYGOTE=0`` turns them off, and so does a Slurm job (:func:`enabled`); if none
can be reached, the command runs in the job's own process, as without them.

This module knows nothing of slimlab's commands: the client names an *entry* module
(the CLI) that provides ``preload()``, run once in the server, and ``main(argv) -> int``,
run in each child. A child that raises prints its traceback into the job's log.
"""

import array
import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
from pathlib import Path

IDLE_S = 600.0
# What a zygote of each kind imports before slimlab itself.
PRELOAD = {"tensorflow": ("tensorflow", "tf_keras", "tensorflow_model_optimization"), "plain": ()}
# The commands a workflow runs once per job: each is served by a zygote.
SERVED = ("run-step", "bench", "mark-failed")
_HEADER_MAX = 1 << 20


def enabled() -> bool:
    """On, unless ``SLIMLAB_ZYGOTE=0``; off by default in a Slurm job. There a zygote would belong to the
    job that started it: Slurm kills it (and the steps of other jobs it runs) when that job ends, and its
    children would compute outside their own jobs' allocations. ``SLIMLAB_ZYGOTE=1`` overrides that."""
    default = "0" if "SLURM_JOB_ID" in os.environ else "1"
    return os.environ.get("SLIMLAB_ZYGOTE", default) != "0" and "SLIMLAB_IN_ZYGOTE" not in os.environ


def kind_for(command: str, step: dict | None = None, input_sidecar: Path | None = None) -> str:
    """``tensorflow`` for a step that loads or makes a Keras model (known from its payload and input alone),
    else ``plain``."""
    if command != "run-step":
        return "plain"
    if step.get("output") == "keras":
        return "tensorflow"
    try:
        keras_input = input_sidecar is not None and json.loads(Path(input_sidecar).read_text())["format"] == "keras"
    except (OSError, ValueError, TypeError, KeyError):
        keras_input = False  # missing or damaged: the command itself says so, in one line
    return "tensorflow" if keras_input else "plain"


# What decides where a child finds its modules: jobs that differ in these get different zygotes.
IMPORT_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "VIRTUAL_ENV")


def socket_path(kind: str, entry: str) -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/slimlab-{os.getuid()}"
    imports = "\0".join([entry, *(os.environ.get(name, "") for name in IMPORT_ENV)])
    # A job in another network, mount or PID namespace (`ip netns exec`, a container) gets a zygote started there.
    namespaces = "\0".join(_namespace(name) for name in ("net", "mnt", "pid", "user", "uts", "ipc"))
    key = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{imports}\0{namespaces}".encode()).hexdigest()[:12]
    return Path(runtime) / "slimlab" / f"zygote-{kind}-{key}.sock"


def _namespace(name: str) -> str:
    try:
        return os.readlink(f"/proc/self/ns/{name}")
    except OSError:
        return ""


def sources() -> dict[str, int]:
    """What a zygote's modules were loaded from, with modification times: each import path folder (an
    installed or removed package changes its folder) and each loaded file outside the installed packages
    (slimlab and its plugins in an editable checkout, PYTHONPATH modules)."""
    installed = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})
    files = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    found = {}
    for path in [*sys.path, *(f for f in files if f and not f.startswith(installed))]:
        try:
            found[path] = os.stat(path or ".").st_mtime_ns
        except OSError:
            found[path] = -1
    return found


# --- client -------------------------------------------------------------------------------


def run(argv: list[str], kind: str, entry: str) -> int | None:
    """Run ``entry.main(argv)`` in a child of the ``kind`` zygote; its exit status, or None if no zygote served."""
    try:
        conn = _connect(socket_path(kind, entry), kind, entry)
    except OSError:
        return None
    with conn:
        umask = os.umask(0o077)
        os.umask(umask)
        header = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                             "cpus": sorted(os.sched_getaffinity(0)),
                             "nice": os.getpriority(os.PRIO_PROCESS, 0)}).encode()
        fds = array.array("i", [0, 1, 2])
        reply = b""
        try:
            conn.sendmsg([len(header).to_bytes(4, "big") + header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            while chunk := conn.recv(4096):
                reply += chunk
        except ConnectionError:
            return None  # a stale zygote turned the job away before reading it
    try:
        return int(json.loads(reply)["exit"])
    except (ValueError, KeyError):
        return None  # the zygote went away mid-job, or its code is stale: run here instead


def _connect(path: Path, kind: str, entry: str) -> socket.socket:
    try:
        return _open(path)
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one job starts it; the others wait here until it listens
        try:
            return _open(path)
        except OSError:
            server = _start(path, kind, entry)
        deadline = time.monotonic() + 120
        while True:
            try:
                return _open(path)
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _open(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _start(path: Path, kind: str, entry: str) -> subprocess.Popen:
    log = path.with_suffix(".log").open("ab")
    # -P: no working directory on sys.path, which would follow the first job's folder into every child.
    return subprocess.Popen([sys.executable, "-P", "-m", "slimlab.zygote", str(path), kind, entry], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True, close_fds=True)


# --- server -------------------------------------------------------------------------------


def serve(path: Path, kind: str, entry: str) -> None:
    """Preload, listen, fork one child per request, report each child's status to its job. A request that
    finds the loaded code changed on disk is turned away, and the zygote stops taking new ones."""
    for module in PRELOAD[kind]:
        __import__(module)
    commands = importlib.import_module(entry)
    commands.preload()
    loaded = sources()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    bound = os.stat(path).st_ino
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    signal.signal(signal.SIGCHLD, lambda *_: os.write(wake_w, b"."))
    jobs: dict[int, socket.socket] = {}
    idle_since = time.monotonic()
    while jobs or (listener and time.monotonic() - idle_since < IDLE_S):
        ready, _, _ = select.select([wake_r, *([listener] if listener else [])], [], [], 5.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(jobs)
            idle_since = time.monotonic()
        if listener in ready:
            conn, _ = listener.accept()
            if sources() != loaded:
                with conn:
                    conn.sendall(json.dumps({"stale": True}).encode())
                _stop_listening(listener, path, bound)
                listener = None
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                _child(conn, commands.main)
            jobs[pid] = conn
    if listener:
        _stop_listening(listener, path, bound)


def _stop_listening(listener: socket.socket, path: Path, bound: int) -> None:
    """Close the socket, and remove its file unless a newer zygote has taken the name already."""
    listener.close()
    try:
        if os.stat(path).st_ino == bound:
            path.unlink()
    except OSError:
        pass


def _reap(jobs: dict[int, socket.socket]) -> None:
    while jobs:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = jobs.pop(pid, None)
        if conn is not None:
            code = os.waitstatus_to_exitcode(status)
            try:  # a signal is the shell's 128 + N, as if the job's own process had died of it
                conn.sendall(json.dumps({"exit": code if code >= 0 else 128 - code}).encode())
            except OSError:
                pass  # the job is gone already
            conn.close()


def _child(conn: socket.socket, main) -> None:
    """In the forked child: become the job (its fds, cwd, env), then run ``main(argv)``."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fds = array.array("i")
        # The descriptors ride on the first bytes: read them with recvmsg, then the rest of the header.
        message, ancillary, _, _ = conn.recvmsg(_HEADER_MAX, socket.CMSG_SPACE(3 * fds.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        size = int.from_bytes(message[:4], "big")
        while len(message) < 4 + size:
            message += conn.recv(4 + size - len(message))
        request = json.loads(message[4:])
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        # What the job's process had and a fork would not: its umask, its cores (`taskset`), its priority.
        os.umask(request["umask"])
        os.sched_setaffinity(0, request["cpus"])
        try:
            os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
        except PermissionError:
            pass  # a higher priority than the zygote's needs privileges this user lacks: keep the zygote's
        os.environ.clear()
        os.environ.update(request["env"], SLIMLAB_IN_ZYGOTE="1")
        os.setsid()
        # The job's end (killed by Snakemake, a timeout, Ctrl-C) closes its connection: end this child too.
        threading.Thread(target=_die_with_job, args=(conn,), daemon=True).start()
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # anything else is the job's crash: its log shows why, as without a zygote
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_job(conn: socket.socket) -> None:
    try:
        conn.recv(1)
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
