"""adb: an Android phone or board reached with the ``adb`` tool (USB, or Wi-Fi as ``host:port``).

Inventory entry::

    transport: adb
    workdir: /data/local/tmp/slimlab
    adb: {serial: 192.168.1.40:5555}

* ``adb`` talks to the adb server on ``$ANDROID_ADB_SERVER_PORT`` (default 5037).
  Every call is an argument list with ``-s SERIAL``; nothing goes through a host shell.
* A ``host:port`` serial is ``adb connect``-ed first. A device that is not in
  the ``device`` state is recovered: a ``host:port`` serial is disconnected and
  connected again (adb 29's ``reconnect offline`` would cancel the server's own
  retry and drop it), a USB serial gets ``adb -s SERIAL reconnect``. The adb
  server is never killed: other users and devices share it.
* ``adb shell`` may exit 0 with truncated output when the device drops, so every
  command ends by printing a random end marker with its exit status; no marker
  means the command never finished (``offline``).
* Pushes go to a temporary name, are checked with ``sha256sum`` on the device,
  then renamed into place.
"""

import secrets
import shutil
import subprocess
import time
from pathlib import Path

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.devices import Settings
from slimlab.lab.transport import CommandResult, DeviceOffline, DeviceTimeout, DeviceToolError, ShellTransport


class AdbSettings(Settings):
    serial: str = Field(min_length=1, pattern=r"^[^-\s][^\s]*$",
                        description="`adb devices` serial; host:port is adb connect-ed first")
    path: str | None = Field(None, description="the adb binary; default: adb on PATH")
    connect_timeout_s: float = Field(10.0, gt=0, le=3600)
    attempts: int = Field(2, ge=1, le=100, description="push attempts, recovering the device between them")


class AdbTransport(ShellTransport):
    name = "adb"
    Settings = AdbSettings
    default_workdir = "/data/local/tmp/slimlab"
    device_lock = "/data/local/tmp/slimlab-device.lock"

    def __init__(self, device):
        super().__init__(device)
        self.serial = self.settings.serial
        self.adb = self.settings.path or shutil.which("adb")
        self.connect_timeout = self.settings.connect_timeout_s
        self.attempts = self.settings.attempts
        self._online = False  # known to be in the "device" state since the last failure

    @property
    def physical_id(self) -> str:
        return f"adb:{self.serial}"

    @property
    def over_tcp(self) -> bool:
        return ":" in self.serial

    def _adb(self, *args: str, timeout: float, select: bool = True) -> subprocess.CompletedProcess:
        if self.adb is None:
            raise DeviceToolError(f"device {self.device_name!r}: no adb binary (apt-get install adb, or set adb.path)")
        argv = [self.adb, *(["-s", self.serial] if select else []), *args]
        try:
            # stdin is never inherited: `adb shell` would forward ours to the device.
            return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
        except OSError as exc:
            raise DeviceToolError(f"device {self.device_name!r}: cannot run {self.adb}: {exc.strerror}") from None

    # --- state and recovery -------------------------------------------------

    def state(self) -> str:
        """``device``, ``offline``, ``unauthorized``..., or ``missing`` when adb does not list the serial."""
        try:
            result = self._adb("get-state", timeout=self.connect_timeout)
        except subprocess.TimeoutExpired:
            return "unresponsive"
        if result.returncode == 0:
            return result.stdout.decode().strip()
        return "offline" if b"offline" in result.stderr else "missing"

    def _wait_for_device(self) -> str:
        deadline = time.monotonic() + self.connect_timeout
        while (state := self.state()) != "device" and time.monotonic() < deadline:
            time.sleep(0.2)
        return state

    def recover(self) -> None:
        """Bring the serial back to the ``device`` state, or raise ``offline``."""
        if self.over_tcp:
            self._adb("disconnect", self.serial, timeout=self.connect_timeout, select=False)
            self._adb("connect", self.serial, timeout=self.connect_timeout, select=False)
        else:
            self._adb("reconnect", timeout=self.connect_timeout)
        state = self._wait_for_device()
        if state != "device":
            raise DeviceOffline(f"device {self.device_name!r}: adb serial {self.serial} is {state} after reconnecting")

    def ensure_online(self) -> None:
        if not self._online:
            if self.state() != "device":
                self.recover()
            self._online = True

    # --- commands -----------------------------------------------------------

    def sh(self, command: str, timeout: float) -> CommandResult:
        self.ensure_online()
        marker = f"slimlab-end-{secrets.token_hex(8)}"
        try:
            result = self._adb("shell", f"{command}; printf '\\n{marker} %d\\n' $?", timeout=timeout)
        except subprocess.TimeoutExpired:
            # Killing our adb client makes the server close the stream, which ends the command.
            self._online = False
            if self.state() == "device":
                raise DeviceTimeout(f"device {self.device_name!r}: command timed out after {timeout:g}s") from None
            raise DeviceOffline(f"device {self.device_name!r}: no answer for {timeout:g}s and adb lost it") from None
        stdout, found, tail = result.stdout.decode(errors="replace").rpartition(f"\n{marker} ")
        if not found:
            self._online = False
            reason = result.stderr.decode(errors="replace").strip() or "output ended before the command finished"
            raise DeviceOffline(f"device {self.device_name!r}: adb shell on {self.serial} broke off: {reason}")
        return CommandResult(int(tail.split()[0]), stdout, result.stderr.decode(errors="replace"))

    # --- files --------------------------------------------------------------

    def _transfer(self, what: str, *args: str, size: int) -> None:
        """Run ``adb push``/``pull``; a failure with the device gone is ``offline``, else a tool error."""
        self.ensure_online()
        try:
            result = self._adb(*args, timeout=60 + size / 1e6)  # at least 1 MB/s
        except subprocess.TimeoutExpired:
            self._online = False
            raise DeviceOffline(f"device {self.device_name!r}: {what} stalled") from None
        if result.returncode != 0:
            self._online = False
            reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            error = DeviceOffline if self.state() != "device" else DeviceToolError
            raise error(f"device {self.device_name!r}: {what} failed: {reason[0]}")

    def copy_to(self, local: Path, remote: str) -> None:
        self._transfer(f"push of {local.name}", "push", str(local), remote, size=local.stat().st_size)

    def copy_from(self, remote: str, local: Path) -> None:
        self._transfer(f"pull of {remote}", "pull", remote, str(local), size=0)


@hookimpl
def register_transports(register):
    register(AdbTransport)
