"""A device-side ADB daemon in pure Python: an Android device without the hardware.

``AdbPeer`` listens on 127.0.0.1 and speaks the real ADB transport protocol
(:mod:`labpeers.adb_wire`), so the stock ``adb`` client and server can
``adb connect 127.0.0.1:PORT`` to it and then ``shell``, ``push`` and ``pull``
as they would against a phone reached over Wi-Fi.

Services
--------
* ``shell,v2,...:<cmd>`` (shell protocol v2: separate stdout/stderr and the
  exit code), ``shell:<cmd>`` (v1: stdout and stderr merged, no exit code) and
  ``exec:<cmd>`` (raw, like v1). ``pty`` requests are served as ``raw``: no
  terminal is allocated. An empty command starts an interactive ``/bin/sh``.
* ``sync:`` with the classic requests ``STAT``, ``LIST``, ``SEND``, ``RECV``
  and ``QUIT`` (AOSP ``SYNC.TXT``). Only :data:`DEFAULT_FEATURES` are advertised.

The device's filesystem
-----------------------
The *sandbox* directory plays the device's ``/`` for file transfers: device
path ``/data/local/tmp/x`` is ``sandbox/data/local/tmp/x`` (``..`` cannot climb
out). One exception keeps shell and sync in agreement: a device path that
already lies inside the sandbox (its real absolute host path) is used as is.

Shell commands are *not* confined: they run on the host with
``/bin/sh -c <cmd>``, unmodified, with the sandbox as working directory, so
relative paths resolve like sync's device paths (``cat data/local/tmp/x``)
while an absolute path in a command is a real host path. Tests that need one
device directory visible to both shell and sync should therefore use the
sandbox's own absolute path as the device work directory. The environment
also carries ``ADB_PEER_ROOT`` (the sandbox), ``HOME`` (the sandbox) and
``TMPDIR`` (the sandbox's ``data/local/tmp``, created on start).

Processes
---------
Each command runs in its own process group. A command that finishes leaves
its background jobs running, as on a device. A host that hangs up on a running
command (client killed, connection lost) gets it killed, group and all.
``stop()`` is switching the device off: it closes the listener and every
connection, so the adb server lists the device as offline, and kills every
process group the peer started. ``start()`` (or ``restart()``) binds the same
port again; the adb server reconnects by itself (adb 29 retries every 10 s)
or at once after ``adb disconnect`` + ``adb connect``.

Run ``python -m labpeers.adb_device --sandbox DIR --port N`` from the checkout's root to use it by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from labpeers.adb_wire import (
    SHELL_EXIT,
    SHELL_HEADER,
    SHELL_STDERR,
    SHELL_STDOUT,
    SYNC_DATA_MAX,
    SYNC_DENT,
    SYNC_HEADER,
    SYNC_PATH_MAX,
    SYNC_STAT,
    Connection,
    Stream,
    feed_stdin,
    pump_output,
    receive_file_data,
    sync_fail,
)

log = logging.getLogger(__name__)

# shell_v2: separate stdout/stderr and a real exit code for `adb shell`.
# fixed_push_mkdir: SEND creates missing parent directories. Without it (and
# with shell_v2) `adb push DIR` first runs `mkdir <device paths>` through the
# shell, which here would create them on the host.
# Deliberately absent: "cmd" (this device has no `cmd` binary) and
# stat_v2/ls_v2/sendrecv_v2* (their STA2/LIS2/SND2/RCV2 requests are not served).
DEFAULT_FEATURES = ("shell_v2", "fixed_push_mkdir")


class AdbPeer:
    """A fake Android device reachable with ``adb connect 127.0.0.1:PORT``."""

    def __init__(self, sandbox: Path, port: int = 0, features: tuple[str, ...] | list[str] = DEFAULT_FEATURES) -> None:
        self.sandbox = Path(sandbox).resolve()
        self.port = port
        self.features = tuple(features)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: dict[Connection, threading.Thread] = {}
        # Process groups of every command run since start(), background jobs
        # included: stop() kills them all, like switching the device off.
        self._process_groups: set[int] = set()
        self._lock = threading.Lock()

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def banner(self) -> bytes:
        props = "ro.product.name=slimlab_peer;ro.product.model=slimlab_peer;ro.product.device=slimlab_peer"
        return f"device::{props};features={','.join(self.features)}".encode()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> AdbPeer:
        if self._listener is not None:
            raise RuntimeError("AdbPeer already started")
        (self.sandbox / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Restarting on the same port must not trip over TIME_WAIT sockets
        # left by the connections stop() closed.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(8)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                               name=f"adb-peer-{self.port}", daemon=True)
        self._accept_thread.start()
        log.info("adb peer listening on %s, sandbox %s", self.serial, self.sandbox)
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and kill every command.

        On return the host has been disconnected (it lists the device as
        offline) and a restart can bind the same port.
        """
        listener, self._listener = self._listener, None
        if listener is None:
            return
        # shutdown() wakes the thread blocked in accept(); close() alone does not.
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # never accepted anything; close() is enough
        listener.close()
        self._accept_thread.join(timeout=5)
        with self._lock:
            connections = dict(self._connections)
            groups, self._process_groups = self._process_groups, set()
        for conn in connections:
            conn.close()
        for thread in connections.values():
            thread.join(timeout=5)
        for pgid in groups:
            _kill_group(pgid)

    def restart(self) -> AdbPeer:
        self.stop()
        return self.start()

    def __enter__(self) -> AdbPeer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # stop() shut the listener down
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock)
            thread = threading.Thread(target=conn.run, name=f"adb-peer-conn-{sock.fileno()}", daemon=True)
            with self._lock:
                if self._listener is not listener:
                    sock.close()  # stop() raced with this accept
                    return
                self._connections[conn] = thread
            thread.start()

    def forget(self, conn: Connection) -> None:
        with self._lock:
            self._connections.pop(conn, None)

    # -- services ----------------------------------------------------------

    def service_handler(self, service: str) -> Callable[[Stream], None] | None:
        """The callable serving ``service`` on a stream, or None if unsupported."""
        name, sep, command = service.partition(":")
        if not sep:
            return None
        options = name.split(",")
        if options[0] == "shell":
            # Options are e.g. "v2", "raw", "pty", "TERM=xterm"; only v2 matters.
            v2 = "v2" in options[1:]
            return lambda stream: self._run_command(stream, command, shell_v2=v2)
        if name == "exec":
            return lambda stream: self._run_command(stream, command, shell_v2=False)
        if name == "sync":
            return self._serve_sync
        return None

    def device_path(self, path: str) -> Path:
        """The sandbox file behind a device path (see the module docstring)."""
        if os.path.isabs(path) and Path(os.path.normpath(path)).is_relative_to(self.sandbox):
            return Path(os.path.normpath(path))
        return self.sandbox / os.path.normpath("/" + path).lstrip("/")

    def _command_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(ADB_PEER_ROOT=str(self.sandbox), HOME=str(self.sandbox),
                   TMPDIR=str(self.sandbox / "data" / "local" / "tmp"))
        return env

    def _run_command(self, stream: Stream, command: str, shell_v2: bool) -> None:
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        proc = subprocess.Popen(
            argv, cwd=self.sandbox, env=self._command_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            # Without the shell protocol there is one byte stream, as in adbd.
            stderr=subprocess.PIPE if shell_v2 else subprocess.STDOUT,
            # Own process group, so that whole pipelines can be killed.
            start_new_session=True,
        )
        with self._lock:
            self._process_groups.add(proc.pid)
        # A host hanging up (client killed, connection lost) kills the command
        # instead of leaving it to a SIGPIPE it may never get.
        stream.on_close = lambda: _kill_group(proc.pid)
        if stream.closed:
            _kill_group(proc.pid)
        try:
            outputs = [(proc.stdout, SHELL_STDOUT)]
            if shell_v2:
                outputs.append((proc.stderr, SHELL_STDERR))
            pumps = [threading.Thread(target=pump_output, args=(pipe, stream, packet_id if shell_v2 else None),
                                      daemon=True) for pipe, packet_id in outputs]
            for pump in pumps:
                pump.start()
            threading.Thread(target=feed_stdin, args=(stream, proc, shell_v2), daemon=True).start()
            for pump in pumps:
                pump.join()
            if stream.closed:
                return  # the host hung up: nobody is left to read an exit code
            code = proc.wait()
            # Finished normally: background jobs it started live on, as on a device.
            stream.on_close = None
            if shell_v2:
                # sh reports death by signal N as 128+N; do the same.
                status = code if code >= 0 else 128 - code
                stream.write(SHELL_HEADER.pack(SHELL_EXIT, 1) + bytes([status & 0xFF]))
        finally:
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def _serve_sync(self, stream: Stream) -> None:
        while (header := stream.read_exact(SYNC_HEADER.size)) is not None:
            request, length = SYNC_HEADER.unpack(header)
            if request == b"QUIT":
                return
            if request not in (b"STAT", b"LIST", b"SEND", b"RECV") or length > SYNC_PATH_MAX:
                sync_fail(stream, f"unsupported sync request {request!r} (length {length})")
                return
            raw_path = stream.read_exact(length)
            if raw_path is None:
                return
            path = raw_path.decode("utf-8", "surrogateescape")
            log.debug("sync %s %r", request.decode(), path)
            if request == b"STAT":
                self._sync_stat(stream, path)
            elif request == b"LIST":
                self._sync_list(stream, path)
            elif request == b"SEND":
                if not self._sync_send(stream, path):
                    return
            elif not self._sync_recv(stream, path):
                return

    def _sync_stat(self, stream: Stream, path: str) -> None:
        # Like adbd: lstat, and all zeros (mode 0) when the path is missing.
        try:
            st = os.lstat(self.device_path(path))
            reply = SYNC_STAT.pack(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        except OSError:
            reply = SYNC_STAT.pack(b"STAT", 0, 0, 0)
        stream.write(reply)

    def _sync_list(self, stream: Stream, path: str) -> None:
        directory = self.device_path(path)
        reply = bytearray()
        try:
            names = os.listdir(directory)
        except OSError:
            names = []  # adbd also answers an unreadable directory with just DONE
        for name in [".", ".."] + names:
            try:
                st = os.lstat(directory / name)
            except OSError:
                continue
            encoded = os.fsencode(name)
            reply += SYNC_DENT.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(encoded))
            reply += encoded
        reply += SYNC_DENT.pack(b"DONE", 0, 0, 0, 0)
        stream.write(bytes(reply))

    def _sync_send(self, stream: Stream, spec: str) -> bool:
        """Receive one file; False if the stream must end (as adbd does on error)."""
        path, sep, mode_text = spec.rpartition(",")
        if not sep:
            path, mode_text = spec, "420"  # no mode given: 0644
        try:
            mode = int(mode_text)
        except ValueError:
            sync_fail(stream, f"bad SEND mode in {spec!r}")
            return False
        if not stat.S_ISREG(mode):
            sync_fail(stream, f"only regular files can be pushed, got mode {mode:o}")
            return False
        target = self.device_path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Like adbd: replace, don't overwrite (the old file may be read-only).
            target.unlink(missing_ok=True)
            out = open(target, "wb")
        except OSError as exc:
            sync_fail(stream, f"cannot create {path}: {exc.strerror}")
            return False
        mtime = None
        try:
            with out:
                mtime = receive_file_data(stream, out)
        finally:
            if mtime is None:
                target.unlink(missing_ok=True)  # no half-pushed files left behind
        if mtime is None:
            return False
        os.chmod(target, stat.S_IMODE(mode))
        os.utime(target, (mtime, mtime))
        stream.write(SYNC_HEADER.pack(b"OKAY", 0))
        return True

    def _sync_recv(self, stream: Stream, path: str) -> bool:
        try:
            source = open(self.device_path(path), "rb")
        except OSError as exc:
            sync_fail(stream, f"cannot open {path}: {exc.strerror}")
            return False
        with source:
            # Batch many DATA records into each WRTE: every WRTE costs a round trip.
            batch = bytearray()
            while chunk := source.read(SYNC_DATA_MAX):
                batch += SYNC_HEADER.pack(b"DATA", len(chunk)) + chunk
                if len(batch) >= stream.conn.max_payload:
                    stream.write(bytes(batch))
                    batch.clear()
            batch += SYNC_HEADER.pack(b"DONE", 0)
            stream.write(bytes(batch))
        return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group has exited already


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake ADB device on 127.0.0.1.")
    parser.add_argument("--sandbox", type=Path, required=True, help="directory acting as the device's /")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--features", default=",".join(DEFAULT_FEATURES), help="comma-separated feature list")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    args.sandbox.mkdir(parents=True, exist_ok=True)
    features = [feature for feature in args.features.split(",") if feature]
    with AdbPeer(args.sandbox, args.port, features=features) as peer:
        print(f"adb peer ready: adb connect {peer.serial}", flush=True)
        # Let SIGTERM unwind like Ctrl-C, so that the context manager stops
        # the peer and kills any command still running.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
