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
    """The device could not be reached, or dropped mid-command: retried, then the record's failure is ``offline``."""

    tag = "offline"


class DeviceTimeout(DeviceError):
    """The device answered, but a command outran its time limit (and was stopped)."""

    tag = "timeout"


class DeviceToolError(DeviceError):
    """The device answered, but a tool on it (or on the host) failed."""

    tag = "tool_error"


def failure_tag(error: DeviceError) -> str:
    """The failure class of a device error; untagged ones (e.g. a payload's crash) are tool errors."""
    return getattr(error, "tag", DeviceToolError.tag)


@dataclass(frozen=True)
class CommandResult:
    """What a command on a device gave: its exit status, and its output decoded to ``str`` (not bytes)."""

    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """A way to reach one device; ``register(MyTransport)`` (the class) from ``register_transports``.

    The lab makes one instance per bench job and device (two when an energy probe reads beside the runner) from
    the device's inventory entry, and calls :meth:`close` when done. A subclass sets:

    * ``name``: the inventory's ``transport:`` value; ``Settings``: a :class:`Settings` model of the inventory
      block named after it (``box: {root: ...}``), available as ``self.settings``;
    * ``default_workdir``: where pushed files go when the entry names no ``workdir``;
    * ``runs_on_host``: True if commands run on the machine that runs the workflow (the bench job then holds
      every core, so that nothing else skews the timing);

    and implements ``physical_id``, ``has_file``, ``upload`` and ``run`` (and ``pull`` to bring files back).
    Failures raise :class:`DeviceOffline` (unreachable, or dropped mid-command: retried and reported as
    ``offline``), :class:`DeviceTimeout` or :class:`DeviceToolError`; anything else is reported as a tool error.
    """

    name: str
    Settings: type[Settings] = Settings
    # Where pushed files go when the inventory names no workdir: a folder the login user owns.
    default_workdir: str
    runs_on_host: bool = False
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
        """True if ``remote`` (a path on the device, under :attr:`workdir`) exists with this content."""

    @abstractmethod
    def upload(self, local: Path, remote: str, sha256: str) -> None:
        """Copy the host file ``local`` to ``remote`` on the device, creating its folder, and verify its sha256
        there; a partial file must never be left under the name ``remote``."""

    @abstractmethod
    def run(self, argv: list[str], timeout: float) -> CommandResult:
        """Run ``argv`` (the program first) in the device's work dir and wait at most ``timeout`` seconds, then
        stop it and raise :class:`DeviceTimeout`. Arguments are never passed through a shell unquoted. A
        non-zero exit status is returned, not raised: the runner decides what it means."""

    def pull(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the device to ``local``."""
        raise DeviceToolError(f"device {self.device_name!r}: the {self.name} transport cannot pull files")

    def close(self) -> None:
        """Release connections. Local transports hold none."""


class ShellTransport(Transport):
    """A transport whose device runs POSIX ``sh`` command lines (ssh, adb).

    Every command line is built here, from quoted words only, so a hostile
    path or argument stays one word on the device. A subclass implements:

    * ``sh(command, timeout) -> CommandResult``: run one ``sh`` command line on the device and return its exit
      status and its output *decoded to str*; raise :class:`DeviceOffline` if the link fails or drops, and
      :class:`DeviceTimeout` if the command outruns ``timeout`` seconds (the command is then stopped);
    * ``copy_to(local, remote)`` and ``copy_from(remote, local)``: copy one file, one attempt, raising
      :class:`DeviceOffline` for a link failure (retried) and :class:`DeviceToolError` for anything else;
    * ``attempts``: how often an upload or pull is tried;
    * ``physical_id`` and ``name``, as every transport; ``requested_workdir()`` if the inventory's ``workdir``
      needs translating (ssh: ``~/x`` is ``x`` in the login's home).

    The work dir is resolved on the device to an absolute path on first use (:attr:`workdir`), so a relative
    ``workdir`` works: commands run there and name pushed files by absolute paths.
    """

    attempts: int
    _resolved_workdir: PurePosixPath | None = None

    @abstractmethod
    def sh(self, command: str, timeout: float) -> CommandResult:
        """Run one ``sh`` command line on the device."""

    def requested_workdir(self) -> str:
        """The work dir as the inventory gives it (else the default), before the device resolves it."""
        return self.device.workdir or self.default_workdir

    @property
    def workdir(self) -> PurePosixPath:
        """The work dir's absolute path on the device: created, checked and resolved there once."""
        if self._resolved_workdir is None:
            self._resolved_workdir = self.check_workdir()
        return self._resolved_workdir

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        workdir = shlex.quote(str(self.workdir))
        return self.sh(f"cd -- {workdir} && {shlex.join(argv)}", timeout)

    def check_workdir(self) -> PurePosixPath:
        """Create the work dir; it must belong to the login user and be closed to others (pushed files are run
        there). Returns its absolute path, as the device resolves it."""
        requested = shlex.quote(self.requested_workdir())
        found = self.sh(f"mkdir -p -m 700 -- {requested} && cd -- {requested} && test -O . "
                        "&& test -z \"$(find . -maxdepth 0 -perm -0002)\" && pwd -P", timeout=30)
        resolved = (found.stdout.strip().splitlines() or [""])[-1]
        if found.returncode != 0 or not resolved.startswith("/"):
            raise DeviceToolError(f"device {self.device_name!r}: workdir {self.requested_workdir()} is not owned by "
                                  "the login user, or others may write to it; set `workdir` to a folder of your own")
        return PurePosixPath(resolved)

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
        parent = shlex.quote(str(PurePosixPath(remote).parent))
        made = self.sh(f"mkdir -p -- {parent}", timeout=30)
        if made.returncode != 0:
            raise DeviceToolError(f"device {self.device_name!r}: cannot create {parent}: {made.stderr.strip()}")
