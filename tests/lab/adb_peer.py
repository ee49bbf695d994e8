"""A device-side ADB daemon in pure Python, for tests that cannot have Android.

``AdbPeer`` listens on 127.0.0.1 and speaks the real ADB transport protocol
(AOSP ``protocol.txt``), so the stock ``adb`` client and server can
``adb connect 127.0.0.1:PORT`` to it and then ``shell``, ``push`` and ``pull``
as they would against a phone reached over Wi-Fi.

What is implemented
-------------------
* Transport: 24-byte little-endian message headers, the ``CNXN`` handshake
  without ``AUTH`` (the peer simply answers the host's ``CNXN``), and
  ``OPEN``/``OKAY``/``WRTE``/``CLSE`` streams with ADB's one-write-in-flight
  flow control. Any number of streams per connection and any number of
  connections run concurrently (one thread per connection and per stream).
* ``shell,v2,...:<cmd>`` (shell protocol v2: separate stdout/stderr and the
  exit code), ``shell:<cmd>`` (v1: stdout and stderr merged, no exit code) and
  ``exec:<cmd>`` (raw, like v1). ``pty`` requests are served as ``raw``: no
  terminal is allocated. An empty command starts an interactive ``/bin/sh``.
* ``sync:`` with the classic requests ``STAT``, ``LIST``, ``SEND``, ``RECV``
  and ``QUIT`` (AOSP ``SYNC.TXT``).

Only the features in :data:`DEFAULT_FEATURES` are advertised; a feature such
as ``stat_v2`` or ``sendrecv_v2`` would make the client switch to request
types (``STA2``, ``SND2``...) that this peer does not speak.

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

Run ``python -m tests.lab.adb_peer --sandbox DIR --port N`` to use it by hand.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import queue
import signal
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257

# 0x01000001 lets both sides skip the payload checksum; older peers need it.
A_VERSION = 0x01000001
A_VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 256 * 1024
# Payloads the host may send us are bounded by our advertised MAX_PAYLOAD;
# anything far beyond it means a broken stream, not a big message.
_MAX_ACCEPTED_PAYLOAD = 1024 * 1024

HEADER = struct.Struct("<6I")

# shell_v2: separate stdout/stderr and a real exit code for `adb shell`.
# fixed_push_mkdir: SEND creates missing parent directories. Without it (and
# with shell_v2) `adb push DIR` first runs `mkdir <device paths>` through the
# shell, which here would create them on the host.
# Deliberately absent: "cmd" (this device has no `cmd` binary) and
# stat_v2/ls_v2/sendrecv_v2* (their STA2/LIS2/SND2/RCV2 requests are not served).
DEFAULT_FEATURES = ("shell_v2", "fixed_push_mkdir")

# Shell protocol v2 packet ids (AOSP adb shell_protocol.h). Id 5, a window
# size change, is ignored: no pty is ever allocated.
SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_HEADER = struct.Struct("<BI")

SYNC_HEADER = struct.Struct("<4sI")
SYNC_STAT = struct.Struct("<4sIII")
SYNC_DENT = struct.Struct("<4sIIII")
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024

_OUTPUT_CHUNK = 64 * 1024


class StreamClosed(Exception):
    """The stream (or its whole connection) went away."""


def _command_name(command: int) -> str:
    return command.to_bytes(4, "little").decode("ascii", "replace")


class _Stream:
    """One ADB stream: an inbox for the host's WRTEs and a flow-controlled writer."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._buffer = bytearray()
        self._eof = False
        # ADB allows one unacknowledged WRTE per direction; the device may
        # write once right after its OKAY to the OPEN.
        self._may_write = threading.Event()
        self._may_write.set()
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        # Called once when the stream closes, from whichever side.
        self.on_close: Callable[[], None] | None = None

    # Called from the connection's reader thread.
    def on_data(self, data: bytes) -> None:
        self._inbox.put(data)

    def on_okay(self) -> None:
        self._may_write.set()

    def on_remote_close(self) -> None:
        self._mark_closed()

    def _mark_closed(self) -> bool:
        """Wake every waiter; False if the stream was already closed."""
        with self._close_lock:
            if self._closed.is_set():
                return False
            self._closed.set()
        self._may_write.set()
        self._inbox.put(None)
        if self.on_close is not None:
            self.on_close()
        return True

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def read_chunk(self) -> bytes | None:
        """The next WRTE payload, or None at end of stream.

        The host's WRTE is acknowledged only now that it has been consumed,
        which is what keeps a fast sender from piling data up in the inbox.
        """
        data = self._inbox.get()
        if data is None:
            return None
        if not self.closed:
            self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    def read_exact(self, size: int) -> bytes | None:
        """Exactly ``size`` bytes, or None if the stream ends first."""
        while len(self._buffer) < size and not self._eof:
            chunk = self.read_chunk()
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
        if len(self._buffer) < size:
            return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def write(self, data: bytes) -> None:
        """Send ``data`` as WRTEs, waiting for the host's OKAY before each one."""
        view = memoryview(data)
        with self._write_lock:
            for start in range(0, len(view), self.conn.max_payload):
                self._may_write.wait()
                if self.closed:
                    raise StreamClosed(f"stream {self.local_id} is closed")
                self._may_write.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id,
                               bytes(view[start:start + self.conn.max_payload]))

    def close(self) -> None:
        """Close from the device side (idempotent)."""
        if self._mark_closed():
            self.conn.forget(self)
            self.conn.send(A_CLSE, self.local_id, self.remote_id)


class _Connection:
    """One host connection: reads messages and dispatches them to streams."""

    def __init__(self, peer: AdbPeer, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.version = A_VERSION
        self.max_payload = MAX_PAYLOAD
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        # The sum is only checked by peers older than A_VERSION_SKIP_CHECKSUM.
        checksum = sum(payload) if self.version < A_VERSION_SKIP_CHECKSUM else 0
        header = HEADER.pack(command, arg0, arg1, len(payload), checksum, command ^ 0xFFFFFFFF)
        with self._send_lock:
            try:
                self.sock.sendall(header + payload)
            except OSError as exc:
                # A dead socket also ends the reader thread, which closes streams.
                raise StreamClosed(f"connection lost: {exc}") from exc

    def _recv_exact(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def _read_message(self) -> tuple[int, int, int, bytes] | None:
        header = self._recv_exact(HEADER.size)
        if header is None:
            return None
        command, arg0, arg1, length, checksum, magic = HEADER.unpack(header)
        if magic != command ^ 0xFFFFFFFF or length > _MAX_ACCEPTED_PAYLOAD:
            log.warning("bad message header %r; dropping the connection", header)
            return None
        payload = self._recv_exact(length) if length else b""
        if payload is None:
            return None
        if self.version < A_VERSION_SKIP_CHECKSUM and sum(payload) != checksum:
            log.warning("bad checksum on %s; dropping the connection", _command_name(command))
            return None
        return command, arg0, arg1, payload

    def run(self) -> None:
        try:
            while (message := self._read_message()) is not None:
                self._dispatch(*message)
        except StreamClosed:
            pass
        finally:
            self._shutdown()

    def _dispatch(self, command: int, arg0: int, arg1: int, payload: bytes) -> None:
        if command == A_CNXN:
            self.version = min(arg0, A_VERSION)
            self.max_payload = min(arg1, MAX_PAYLOAD)
            log.debug("CNXN from host: version %#x, maxdata %d, %r", arg0, arg1, payload)
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.peer.banner())
        elif command == A_OPEN:
            self._open(arg0, payload.rstrip(b"\0").decode("utf-8", "surrogateescape"))
        elif command in (A_OKAY, A_WRTE, A_CLSE):
            # arg0 is the host's id, arg1 ours. A 4-byte OKAY payload is the
            # delayed-ack window of newer adb; as we never advertise
            # delayed_ack, any OKAY just permits the next write.
            with self._streams_lock:
                stream = self._streams.get(arg1)
                if command == A_CLSE and stream is not None:
                    del self._streams[arg1]
            if stream is None:
                return  # e.g. the host's CLSE answering ours
            if command == A_OKAY:
                stream.on_okay()
            elif command == A_WRTE:
                stream.on_data(payload)
            else:
                stream.on_remote_close()
        else:
            # AUTH/STLS are never requested by us; SYNC is obsolete.
            log.warning("ignoring unexpected %s message", _command_name(command))

    def _open(self, remote_id: int, service: str) -> None:
        handler = self.peer.service_handler(service)
        if handler is None:
            log.info("refusing unknown service %r", service)
            self.send(A_CLSE, 0, remote_id)
            return
        stream = _Stream(self, next(self._ids), remote_id)
        with self._streams_lock:
            self._streams[stream.local_id] = stream
        log.debug("OPEN %r as stream %d", service, stream.local_id)
        self.send(A_OKAY, stream.local_id, remote_id)
        threading.Thread(target=self._serve, args=(handler, stream),
                         name=f"adb-peer-stream-{stream.local_id}", daemon=True).start()

    @staticmethod
    def _serve(handler: Callable[[_Stream], None], stream: _Stream) -> None:
        try:
            handler(stream)
        except StreamClosed:
            pass
        finally:
            try:
                stream.close()
            except StreamClosed:
                pass

    def forget(self, stream: _Stream) -> None:
        with self._streams_lock:
            self._streams.pop(stream.local_id, None)

    def close(self) -> None:
        """Drop the connection; the reader thread then closes every stream."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected

    def _shutdown(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream.on_remote_close()
        self.sock.close()
        self.peer.forget(self)


class AdbPeer:
    """A fake Android device reachable with ``adb connect 127.0.0.1:PORT``."""

    def __init__(self, sandbox: Path, port: int = 0, features: tuple[str, ...] | list[str] = DEFAULT_FEATURES) -> None:
        self.sandbox = Path(sandbox).resolve()
        self.port = port
        self.features = tuple(features)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: dict[_Connection, threading.Thread] = {}
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
            conn = _Connection(self, sock)
            thread = threading.Thread(target=conn.run, name=f"adb-peer-conn-{sock.fileno()}", daemon=True)
            with self._lock:
                if self._listener is not listener:
                    sock.close()  # stop() raced with this accept
                    return
                self._connections[conn] = thread
            thread.start()

    def forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.pop(conn, None)

    # -- services ----------------------------------------------------------

    def service_handler(self, service: str) -> Callable[[_Stream], None] | None:
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

    def _run_command(self, stream: _Stream, command: str, shell_v2: bool) -> None:
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
            pumps = [threading.Thread(target=_pump_output, args=(pipe, stream, packet_id if shell_v2 else None),
                                      daemon=True) for pipe, packet_id in outputs]
            for pump in pumps:
                pump.start()
            threading.Thread(target=_feed_stdin, args=(stream, proc, shell_v2), daemon=True).start()
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

    def _serve_sync(self, stream: _Stream) -> None:
        while (header := stream.read_exact(SYNC_HEADER.size)) is not None:
            request, length = SYNC_HEADER.unpack(header)
            if request == b"QUIT":
                return
            if request not in (b"STAT", b"LIST", b"SEND", b"RECV") or length > SYNC_PATH_MAX:
                _sync_fail(stream, f"unsupported sync request {request!r} (length {length})")
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

    def _sync_stat(self, stream: _Stream, path: str) -> None:
        # Like adbd: lstat, and all zeros (mode 0) when the path is missing.
        try:
            st = os.lstat(self.device_path(path))
            reply = SYNC_STAT.pack(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        except OSError:
            reply = SYNC_STAT.pack(b"STAT", 0, 0, 0)
        stream.write(reply)

    def _sync_list(self, stream: _Stream, path: str) -> None:
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

    def _sync_send(self, stream: _Stream, spec: str) -> bool:
        """Receive one file; False if the stream must end (as adbd does on error)."""
        path, sep, mode_text = spec.rpartition(",")
        if not sep:
            path, mode_text = spec, "420"  # no mode given: 0644
        try:
            mode = int(mode_text)
        except ValueError:
            _sync_fail(stream, f"bad SEND mode in {spec!r}")
            return False
        if not stat.S_ISREG(mode):
            _sync_fail(stream, f"only regular files can be pushed, got mode {mode:o}")
            return False
        target = self.device_path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Like adbd: replace, don't overwrite (the old file may be read-only).
            target.unlink(missing_ok=True)
            out = open(target, "wb")
        except OSError as exc:
            _sync_fail(stream, f"cannot create {path}: {exc.strerror}")
            return False
        mtime = None
        try:
            with out:
                mtime = _receive_file_data(stream, out)
        finally:
            if mtime is None:
                target.unlink(missing_ok=True)  # no half-pushed files left behind
        if mtime is None:
            return False
        os.chmod(target, stat.S_IMODE(mode))
        os.utime(target, (mtime, mtime))
        stream.write(SYNC_HEADER.pack(b"OKAY", 0))
        return True

    def _sync_recv(self, stream: _Stream, path: str) -> bool:
        try:
            source = open(self.device_path(path), "rb")
        except OSError as exc:
            _sync_fail(stream, f"cannot open {path}: {exc.strerror}")
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


def _receive_file_data(stream: _Stream, out) -> int | None:
    """Copy SEND's DATA records to ``out``; the mtime from DONE, or None on failure."""
    while (header := stream.read_exact(SYNC_HEADER.size)) is not None:
        request, length = SYNC_HEADER.unpack(header)
        if request == b"DONE":
            return length
        if request != b"DATA" or length > SYNC_DATA_MAX:
            _sync_fail(stream, f"unexpected {request!r} (length {length}) in SEND")
            return None
        data = stream.read_exact(length)
        if data is None:
            return None
        out.write(data)
    return None


def _sync_fail(stream: _Stream, message: str) -> None:
    log.info("sync FAIL: %s", message)
    encoded = message.encode()
    stream.write(SYNC_HEADER.pack(b"FAIL", len(encoded)) + encoded)


def _pump_output(pipe, stream: _Stream, packet_id: int | None) -> None:
    """Copy a process's output to the stream, framed as shell v2 packets if packet_id is set."""
    try:
        while chunk := pipe.read1(_OUTPUT_CHUNK):
            if packet_id is not None:
                chunk = SHELL_HEADER.pack(packet_id, len(chunk)) + chunk
            stream.write(chunk)
    except StreamClosed:
        pass  # the host hung up; the stream's on_close kills the process


def _feed_stdin(stream: _Stream, proc: subprocess.Popen, shell_v2: bool) -> None:
    """Forward the host's input to the process until either side ends."""
    try:
        if shell_v2:
            while (header := stream.read_exact(SHELL_HEADER.size)) is not None:
                packet_id, length = SHELL_HEADER.unpack(header)
                payload = stream.read_exact(length)
                if payload is None:
                    break
                if packet_id == SHELL_STDIN:
                    proc.stdin.write(payload)
                    proc.stdin.flush()
                elif packet_id == SHELL_CLOSE_STDIN:
                    proc.stdin.close()
        else:
            while (chunk := stream.read_chunk()) is not None:
                proc.stdin.write(chunk)
                proc.stdin.flush()
    except (OSError, ValueError):
        pass  # the process exited (broken pipe) or stdin is already closed
    except StreamClosed:
        pass  # the connection died; the stream's on_close kills the process


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
