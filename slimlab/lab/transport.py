"""What every transport offers the runners: content-addressed push, run, pull, close.

Transports raise :class:`DeviceError` subclasses that say *why* a device
failed, so that ``bench.run`` can tag a failed job and the report never
mistakes a dead board for a slow model:

* ``offline``: the device could not be reached, or dropped mid-command;
* ``timeout``: the device answered, but the command outran its time limit;
* ``tool_error``: the device answered, but a tool on it (or on the host) failed.
"""

import logging
import secrets
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from slimlab.artifacts import sha256_file
from slimlab.errors import DeviceError
from slimlab.lab.devices import Device, Settings

log = logging.getLogger(__name__)


class DeviceOffline(DeviceError):
    tag = "offline"


class DeviceTimeout(DeviceError):
    tag = "timeout"


class DeviceToolError(DeviceError):
    tag = "tool_error"


def failure_tag(error: DeviceError) -> str:
    """The failure class of a device error; untagged ones (e.g. a payload's crash) are tool errors."""
    return getattr(error, "tag", DeviceToolError.tag)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """A way to reach one device. Subclasses set ``name`` (as registered) and ``Settings`` (their inventory block)."""

    name: str
    Settings: type[Settings] = Settings
    # Where pushed files go when the inventory names no workdir: a folder the login user owns.
    default_workdir: str
    # A file every payload on the device flocks while it measures, whoever started it.
    device_lock: str = "/tmp/slimlab-device.lock"

    def __init__(self, device: Device):
        self.device = device
        self.settings = device.transport_settings

    @property
    def device_name(self) -> str:
        return self.device.name

    @property
    @abstractmethod
    def physical_id(self) -> str:
        """The device as this transport reaches it, the same from every inventory: what the lab locks."""

    @property
    def workdir(self) -> PurePosixPath:
        return PurePosixPath(self.device.workdir or self.default_workdir)

    def retrying(self, attempts: int) -> Retrying:
        """Retry a link failure (``offline``) with exponential backoff; other failures are final."""
        return Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception_type(DeviceOffline),
            before_sleep=lambda state: log.warning("%s; retrying", state.outcome.exception()),
            reraise=True,
        )

    def push(self, local: Path) -> str:
        """Upload ``local`` once, named by its sha256, and return its path on the device."""
        digest = sha256_file(local)
        remote = str(self.workdir / "blobs" / f"{digest}{Path(local).suffix}")
        if not self.has_file(remote, digest):
            self.upload(Path(local), remote, digest)
        return remote

    @abstractmethod
    def has_file(self, remote: str, sha256: str) -> bool:
        """True if ``remote`` exists on the device with this content."""

    @abstractmethod
    def upload(self, local: Path, remote: str, sha256: str) -> None:
        """Copy ``local`` to ``remote`` and verify its sha256 there."""

    @abstractmethod
    def run(self, argv: list[str], timeout: float) -> CommandResult:
        """Run ``argv`` in the device's work dir. Arguments are never passed through a shell unquoted."""

    def pull(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the device to ``local``."""
        raise DeviceToolError(f"device {self.device_name!r}: the {self.name} transport cannot pull files")

    def close(self) -> None:
        """Release connections. Local transports hold none."""


class ShellTransport(Transport):
    """A transport whose device runs POSIX ``sh`` command lines (ssh, adb).

    Every command line is built here, from quoted words only, so a hostile
    path or argument stays one word on the device. Subclasses set ``attempts``
    (how often an upload or pull is tried).
    """

    attempts: int
    _workdir_checked = False

    @abstractmethod
    def sh(self, command: str, timeout: float) -> CommandResult:
        """Run one ``sh`` command line on the device."""

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        workdir = shlex.quote(str(self.workdir))
        if not self._workdir_checked:
            self.check_workdir()
        return self.sh(f"mkdir -p -- {workdir} && cd -- {workdir} && {shlex.join(argv)}", timeout)

    def check_workdir(self) -> None:
        """The work dir must belong to the login user and be closed to others: pushed files are run there."""
        workdir = shlex.quote(str(self.workdir))
        found = self.sh(f"mkdir -p -m 700 -- {workdir} && test -O {workdir} && find {workdir} -maxdepth 0 -perm -0002",
                        timeout=30)
        if found.returncode != 0 or found.stdout.strip():
            raise DeviceToolError(f"device {self.device_name!r}: workdir {self.workdir} is not owned by the login user, "
                                  "or others may write to it; set `workdir` to a folder of your own")
        self._workdir_checked = True

    def remote_sha256(self, remote: str, timeout: float = 120) -> str | None:
        """The sha256 of a device file, or None if it cannot be read there."""
        result = self.sh(f"sha256sum -- {shlex.quote(remote)}", timeout)
        fields = result.stdout.split()
        return fields[0] if result.returncode == 0 and fields else None

    def has_file(self, remote: str, sha256: str) -> bool:
        return self.remote_sha256(remote) == sha256

    def verify_and_commit(self, partial: str, remote: str, sha256: str) -> None:
        """Check an uploaded temp file's sha256 on the device, then rename it into place atomically."""
        found = self.remote_sha256(partial)
        if found != sha256:
            self.sh(f"rm -f -- {shlex.quote(partial)}", timeout=30)
            raise DeviceToolError(
                f"device {self.device_name!r}: upload to {remote} has sha256 {found}, expected {sha256}"
            )
        moved = self.sh(f"mv -f -- {shlex.quote(partial)} {shlex.quote(remote)}", timeout=30)
        if moved.returncode != 0:
            raise DeviceToolError(f"device {self.device_name!r}: cannot rename {partial}: {moved.stderr.strip()}")

    @abstractmethod
    def copy_to(self, local: Path, remote: str) -> None:
        """Copy one file to the device (one attempt; ``upload`` retries and verifies)."""

    @abstractmethod
    def copy_from(self, remote: str, local: Path) -> None:
        """Copy one file from the device (one attempt; ``pull`` retries)."""

    def upload(self, local: Path, remote: str, sha256: str) -> None:
        partial = f"{remote}.part-{secrets.token_hex(4)}"
        for attempt in self.retrying(self.attempts):
            with attempt:
                self.mkdir_for(remote)
                self.copy_to(local, partial)
                self.verify_and_commit(partial, remote, sha256)

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        partial = local.with_name(f".{local.name}.part-{secrets.token_hex(4)}")
        for attempt in self.retrying(self.attempts):
            with attempt:
                self.copy_from(remote, partial)
        partial.replace(local)

    def mkdir_for(self, remote: str) -> None:
        if not self._workdir_checked:
            self.check_workdir()
        parent = shlex.quote(str(PurePosixPath(remote).parent))
        made = self.sh(f"mkdir -p -- {parent}", timeout=30)
        if made.returncode != 0:
            raise DeviceToolError(f"device {self.device_name!r}: cannot create {parent}: {made.stderr.strip()}")
