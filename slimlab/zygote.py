"""Pay TensorFlow's start-up once per machine: a fork server for the steps that need it.

A ``slimlab run-step`` whose input or output is a Keras model asks a per-user server
on this host (the *zygote*) to fork a child that runs the step. The zygote imported
TensorFlow, tf_keras and tfmot once and never runs TensorFlow itself, so each child
starts with them loaded. The child gets the job's own standard input, output and
error (passed over the Unix socket), its working directory, environment and
arguments: its log is the job's log, a crash or a leak stays in it, and its exit
status is the job's. Snakemake, or Slurm on a cluster node, sees an ordinary job.
If the job is killed, the child notices the closed connection and dies with it.

The zygote starts on first use, detached, and exits after ``IDLE_S`` seconds
without a request. Its socket is named after the Python that runs it, so a new
environment (or PYTHONPATH) gets a new zygote. ``SLIMLAB_ZYGOTE=0`` turns it off, and so does a
Slurm job (:func:`enabled`); if it cannot be reached, the step runs in the job's own process, as
without it.
"""

import array
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

IDLE_S = 600.0
PRELOAD = ("tensorflow", "tf_keras", "tensorflow_model_optimization")
_HEADER_MAX = 1 << 20


def enabled() -> bool:
    """On, unless ``SLIMLAB_ZYGOTE=0``; off by default in a Slurm job. There a zygote would belong to the
    job that started it: Slurm kills it (and the steps of other jobs it runs) when that job ends, and its
    children would compute outside their own jobs' allocations. ``SLIMLAB_ZYGOTE=1`` overrides that."""
    default = "0" if "SLURM_JOB_ID" in os.environ else "1"
    return os.environ.get("SLIMLAB_ZYGOTE", default) != "0" and "SLIMLAB_IN_ZYGOTE" not in os.environ


# What decides where a child finds its modules: jobs that differ in these get different zygotes.
IMPORT_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "VIRTUAL_ENV")


def socket_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/slimlab-{os.getuid()}"
    imports = "\0".join(os.environ.get(name, "") for name in IMPORT_ENV)
    key = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{imports}".encode()).hexdigest()[:12]
    return Path(runtime) / "slimlab" / f"zygote-{key}.sock"


# --- client -------------------------------------------------------------------------------


def run(argv: list[str]) -> int | None:
    """Run ``slimlab argv`` in a child of the zygote; its exit status, or None if no zygote could serve."""
    try:
        conn = _connect()
    except OSError:
        return None
    with conn:
        header = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        fds = array.array("i", [0, 1, 2])
        conn.sendmsg([len(header).to_bytes(4, "big") + header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    try:
        return int(json.loads(reply)["exit"])
    except (ValueError, KeyError):
        return None  # the zygote went away mid-job: say so by running here instead


def _connect() -> socket.socket:
    path = socket_path()
    try:
        return _open(path)
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one job starts it; the others wait for it
        try:
            return _open(path)
        except OSError:
            _start(path)
    deadline = time.monotonic() + 120
    while True:
        try:
            return _open(path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _open(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _start(path: Path) -> None:
    log = path.with_suffix(".log").open("ab")
    # -P: no working directory on sys.path, which would follow the first job's folder into every child.
    subprocess.Popen([sys.executable, "-P", "-m", "slimlab.zygote", str(path)], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=log, start_new_session=True, close_fds=True)


# --- server -------------------------------------------------------------------------------


def serve(path: Path) -> None:
    """Preload, listen, fork one child per request, report each child's status to its job."""
    for module in PRELOAD:
        __import__(module)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    signal.signal(signal.SIGCHLD, lambda *_: os.write(wake_w, b"."))
    jobs: dict[int, socket.socket] = {}
    idle_since = time.monotonic()
    while jobs or time.monotonic() - idle_since < IDLE_S:
        ready, _, _ = select.select([listener, wake_r], [], [], 5.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(jobs)
            idle_since = time.monotonic()
        if listener in ready:
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                _child(conn)
            jobs[pid] = conn
    path.unlink(missing_ok=True)


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


def _child(conn: socket.socket) -> None:
    """In the forked child: become the job (its fds, cwd, env), then run the slimlab command."""
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
        os.environ.clear()
        os.environ.update(request["env"], SLIMLAB_IN_ZYGOTE="1")
        os.setsid()
        # The job's end (killed by Snakemake, a timeout, Ctrl-C) closes its connection: end this child too.
        threading.Thread(target=_die_with_job, args=(conn,), daemon=True).start()
        from slimlab import cli

        code = cli.main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
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
    serve(Path(sys.argv[1]))
