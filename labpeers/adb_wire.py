"""The ADB wire protocol, device side: messages, streams and one host connection.

* Transport (AOSP ``protocol.txt``): 24-byte little-endian message headers, the
  ``CNXN`` handshake without ``AUTH`` (the device simply answers the host's
  ``CNXN``), and ``OPEN``/``OKAY``/``WRTE``/``CLSE`` streams with ADB's
  one-write-in-flight flow control. Any number of streams per connection run
  concurrently (one thread per stream).
* A :class:`Connection` hands each ``OPEN`` to its device's ``service_handler``
  and runs the handler on a :class:`Stream`; the device
  (:mod:`labpeers.adb_device`) serves the services.
* The framing of the services' own protocols: shell protocol v2 packets (AOSP
  ``shell_protocol.h``) and sync requests (AOSP ``SYNC.TXT``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

    from labpeers.adb_device import AdbPeer

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

OUTPUT_CHUNK = 64 * 1024


class StreamClosed(Exception):
    """The stream (or its whole connection) went away."""


def _command_name(command: int) -> str:
    return command.to_bytes(4, "little").decode("ascii", "replace")


class Stream:
    """One ADB stream: an inbox for the host's WRTEs and a flow-controlled writer."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
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


class Connection:
    """One host connection: reads messages and dispatches them to streams."""

    def __init__(self, peer: AdbPeer, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.version = A_VERSION
        self.max_payload = MAX_PAYLOAD
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
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
        stream = Stream(self, next(self._ids), remote_id)
        with self._streams_lock:
            self._streams[stream.local_id] = stream
        log.debug("OPEN %r as stream %d", service, stream.local_id)
        self.send(A_OKAY, stream.local_id, remote_id)
        threading.Thread(target=self._serve, args=(handler, stream),
                         name=f"adb-peer-stream-{stream.local_id}", daemon=True).start()

    @staticmethod
    def _serve(handler: Callable[[Stream], None], stream: Stream) -> None:
        try:
            handler(stream)
        except StreamClosed:
            pass
        finally:
            try:
                stream.close()
            except StreamClosed:
                pass

    def forget(self, stream: Stream) -> None:
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


def receive_file_data(stream: Stream, out) -> int | None:
    """Copy SEND's DATA records to ``out``; the mtime from DONE, or None on failure."""
    while (header := stream.read_exact(SYNC_HEADER.size)) is not None:
        request, length = SYNC_HEADER.unpack(header)
        if request == b"DONE":
            return length
        if request != b"DATA" or length > SYNC_DATA_MAX:
            sync_fail(stream, f"unexpected {request!r} (length {length}) in SEND")
            return None
        data = stream.read_exact(length)
        if data is None:
            return None
        out.write(data)
    return None


def sync_fail(stream: Stream, message: str) -> None:
    log.info("sync FAIL: %s", message)
    encoded = message.encode()
    stream.write(SYNC_HEADER.pack(b"FAIL", len(encoded)) + encoded)


def pump_output(pipe, stream: Stream, packet_id: int | None) -> None:
    """Copy a process's output to the stream, framed as shell v2 packets if packet_id is set."""
    try:
        while chunk := pipe.read1(OUTPUT_CHUNK):
            if packet_id is not None:
                chunk = SHELL_HEADER.pack(packet_id, len(chunk)) + chunk
            stream.write(chunk)
    except StreamClosed:
        pass  # the host hung up; the stream's on_close kills the process


def feed_stdin(stream: Stream, proc: subprocess.Popen, shell_v2: bool) -> None:
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
