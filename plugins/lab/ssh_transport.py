"""ssh: a board reached over SSH (paramiko), with its host key checked.

Inventory entry::

    transport: ssh
    ssh: {host: 10.0.0.7, user: pi, key_file: ~/.ssh/id_ed25519}

* Host keys are checked against ``known_hosts`` (default ``~/.ssh/known_hosts``),
  read by :mod:`slimlab.lab.known_hosts` and never rewritten. An unknown host is
  refused unless ``trust_on_first_use: true``, which logs and appends the one key it
  accepted. A ``@revoked`` key is always refused.
* The private key is read (with its passphrase from ``key_passphrase_env``) before
  connecting, so a wrong passphrase is a ``tool_error`` and is not retried.
* One connection serves every upload and command of a transport; it is reopened
  if it died. Connecting and uploading retry with exponential backoff.
* Every remote call has a deadline: a watchdog closes the connection if opening a
  session, starting a command or starting SFTP outlives it.
* Uploads go to a temporary name over SFTP, are checked with ``sha256sum`` on
  the board and only then renamed into place.
* Every command line is built from ``shlex.quote``'d words. When its deadline
  passes, the board is probed: if it still answers, the command's process group
  is killed and the error is a ``timeout``; if not, ``offline``.
* A ``workdir`` of ``~``, or starting with ``~/``, is the login's home on the board, or in it.
* paramiko is imported when a connection is first made: every slimlab command loads
  this plugin, and most of them (a local bench, a conversion) never use it.
"""

from __future__ import annotations

import errno
import getpass
import logging
import os
import select
import shlex
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.devices import Settings
from slimlab.lab.transport import CommandResult, DeviceOffline, DeviceTimeout, DeviceToolError, ShellTransport

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

# SFTP errors that mean "the board refused", not "the link failed": retrying will not help.
_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOSPC, errno.EROFS, errno.EISDIR, errno.ENOTDIR}


def link_errors() -> tuple[type[BaseException], ...]:
    """What a dropped link raises (an except clause evaluates this only when something was raised)."""
    import paramiko

    return OSError, EOFError, paramiko.SSHException


class SSHSettings(Settings):
    host: str = Field(min_length=1, description="the board's address or name")
    port: int = Field(22, ge=1, le=65535)
    user: str | None = Field(None, min_length=1, description="default: the local user name")
    key_file: str | None = Field(None, description="private key; null = ssh-agent and ~/.ssh/id_*")
    key_passphrase_env: str | None = Field(None, description="environment variable holding the key's passphrase")
    known_hosts: str = Field("~/.ssh/known_hosts", description="unknown host keys are refused")
    trust_on_first_use: bool = Field(False, description="accept and append an unknown host key (logged)")
    connect_timeout_s: float = Field(10.0, gt=0, le=3600)
    keepalive_s: int = Field(15, ge=0, le=3600, description="SSH keepalive interval; 0 = off")
    attempts: int = Field(3, ge=1, le=100, description="connect/upload attempts, with exponential backoff")


class SSHTransport(ShellTransport):
    name = "ssh"
    Settings = SSHSettings
    default_workdir = "~/.cache/slimlab"

    def __init__(self, device):
        super().__init__(device)
        s = self.settings
        self.user = s.user or getpass.getuser()
        self.key_file = str(Path(s.key_file).expanduser()) if s.key_file else None
        self.known_hosts = Path(s.known_hosts).expanduser()
        self.connect_timeout = s.connect_timeout_s
        self.attempts = s.attempts
        self._client: paramiko.SSHClient | None = None

    @property
    def physical_id(self) -> str:
        return f"ssh:{self.settings.host}:{self.settings.port}"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.settings.host}:{self.settings.port}"

    def requested_workdir(self) -> str:
        # sshd starts sessions and SFTP in the home folder: "~/x" is "x" there and "~" is ".", never a folder "~".
        text = self.device.workdir or self.default_workdir
        return (text[2:] or ".") if text == "~" or text.startswith("~/") else text

    # --- connection ---------------------------------------------------------

    def client(self) -> paramiko.SSHClient:
        """The open connection, (re)connecting with retries if there is none."""
        if self._client is None or not self._client.get_transport() or not self._client.get_transport().is_active():
            self.close()
            for attempt in self.retrying(self.attempts):
                with attempt:
                    self._client = self._connect()
        return self._client

    def _private_key(self) -> paramiko.PKey | None:
        import paramiko

        if self.key_file is None:
            return None
        passphrase = None
        if self.settings.key_passphrase_env:
            passphrase = os.environ.get(self.settings.key_passphrase_env)
            if passphrase is None:
                raise DeviceToolError(f"device {self.device_name!r}: ssh.key_passphrase_env names "
                                      f"${self.settings.key_passphrase_env}, which is not set")
        try:
            return paramiko.PKey.from_path(self.key_file, passphrase.encode() if passphrase else None)
        except TypeError:  # cryptography's word for an encrypted key without a passphrase, or a plain key with one
            if not passphrase:
                raise DeviceToolError(f"device {self.device_name!r}: key {self.key_file} is encrypted; "
                                      "set ssh.key_passphrase_env") from None
            raise DeviceToolError(f"device {self.device_name!r}: key {self.key_file} is not encrypted; "
                                  "drop ssh.key_passphrase_env") from None
        except (paramiko.SSHException, ValueError) as exc:
            raise DeviceToolError(f"device {self.device_name!r}: cannot read key {self.key_file} "
                                  f"(wrong passphrase, or not a private key): {exc}") from None
        except OSError as exc:
            raise DeviceToolError(f"device {self.device_name!r}: cannot read key {self.key_file}: {exc.strerror}") from None

    def _connect(self) -> paramiko.SSHClient:
        import paramiko

        from slimlab.lab import known_hosts

        known = known_hosts.read(self.known_hosts)
        pkey = self._private_key()
        client = paramiko.SSHClient()
        known.keys(into=client.get_host_keys())  # read tolerantly above; never written back
        if self.settings.trust_on_first_use:
            client.set_missing_host_key_policy(known_hosts.AppendOnFirstUse(self.known_hosts, self.device_name))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        t = self.connect_timeout
        try:
            client.connect(
                self.settings.host, port=self.settings.port, username=self.user, pkey=pkey,
                # Without a key file, use the agent and ~/.ssh/id_*, as ssh(1) does.
                look_for_keys=pkey is None, allow_agent=pkey is None,
                timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise DeviceToolError(
                f"device {self.device_name!r}: host key of {self.target} does not match {self.known_hosts}; "
                "refusing to connect (was the board reinstalled? fix known_hosts)"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise DeviceToolError(f"device {self.device_name!r}: {self.target} refused the login: {exc}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise DeviceToolError(
                    f"device {self.device_name!r}: host key of {self.target} is not in {self.known_hosts}; add it "
                    "(ssh-keyscan) or set ssh.trust_on_first_use: true"
                ) from None
            raise DeviceOffline(f"device {self.device_name!r}: cannot connect to {self.target}: {exc}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise DeviceOffline(f"device {self.device_name!r}: cannot connect to {self.target}: {exc}") from None
        if known.is_revoked(client.get_transport().get_remote_server_key()):
            client.close()
            raise DeviceToolError(f"device {self.device_name!r}: the host key of {self.target} is marked @revoked "
                                  f"in {self.known_hosts}; refusing to connect")
        client.get_transport().set_keepalive(self.settings.keepalive_s)
        log.debug("device %r: connected to %s", self.device_name, self.target)
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextmanager
    def deadline(self, seconds: float, what: str):
        """Close the connection if the block outlives ``seconds`` (paramiko itself would wait forever)."""
        client = self._client
        fired = threading.Event()

        def expire():
            fired.set()
            client.close()

        timer = threading.Timer(seconds, expire)
        timer.start()
        try:
            yield
        except link_errors() as exc:
            self.close()
            if fired.is_set():
                raise DeviceOffline(f"device {self.device_name!r}: {what} on {self.target} got no answer "
                                    f"in {seconds:g}s") from None
            raise DeviceOffline(f"device {self.device_name!r}: {self.target} dropped {what}: {exc}") from None
        finally:
            timer.cancel()

    # --- commands -----------------------------------------------------------

    def sh(self, command: str, timeout: float) -> CommandResult:
        self.client()
        with self.deadline(self.connect_timeout, "the session"):
            channel = self._client.get_transport().open_session(timeout=self.connect_timeout)
            # The session's shell is a process group leader (sshd calls setsid):
            # its pid, printed first, is what a timeout kills.
            channel.exec_command(f"echo $$; {command}")
            channel.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while not (channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                channel.close()
                return self._timed_out(bytes(out), timeout)
            select.select([channel], [], [], min(remaining, 1.0))
            if channel.recv_ready():
                out += channel.recv(1 << 16)
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
        status = channel.recv_exit_status()
        channel.close()
        if status == -1:  # closed without an exit status: the connection went away
            self.close()
            raise DeviceOffline(f"device {self.device_name!r}: connection to {self.target} dropped mid-command")
        _pid, _, stdout = out.decode(errors="replace").partition("\n")
        return CommandResult(status, stdout, err.decode(errors="replace"))

    def _timed_out(self, out: bytes, timeout: float):
        """Probe the board after a deadline: kill the command if it answers (timeout), else offline."""
        pid = out.split(b"\n", 1)[0].decode(errors="replace").strip()
        probe_timeout = min(self.connect_timeout, 5)
        try:
            # The same connection, no retries: a board that went silent must not cost another minute.
            with self.deadline(probe_timeout, "the probe after a timeout"):
                probe = self._client.get_transport().open_session(timeout=probe_timeout)
                probe.settimeout(probe_timeout)
                probe.exec_command(f"kill -KILL -- -{shlex.quote(pid)}" if pid.isdigit() else "true")
                probe.recv_exit_status()
                probe.close()
        except DeviceOffline:
            raise DeviceOffline(
                f"device {self.device_name!r}: no answer from {self.target} for {timeout:g}s and it is unreachable now"
            ) from None
        raise DeviceTimeout(f"device {self.device_name!r}: command on {self.target} timed out after {timeout:g}s")

    # --- files --------------------------------------------------------------

    def _sftp(self, what: str, transfer) -> None:
        """Run one SFTP transfer; link failures drop the connection and are retried by the caller."""
        self.client()
        with self.deadline(self.connect_timeout, "starting SFTP"):
            sftp = self._client.open_sftp()
        try:
            sftp.get_channel().settimeout(self.connect_timeout)  # a stalled link fails, not hangs
            transfer(sftp)
        except link_errors() as exc:
            if isinstance(exc, OSError) and exc.errno in _FILE_ERRNOS:
                raise DeviceToolError(f"device {self.device_name!r}: {what} failed: {exc.strerror}") from None
            self.close()
            raise DeviceOffline(f"device {self.device_name!r}: {what} over {self.target} failed: {exc!r}") from None
        finally:
            sftp.close()

    def copy_to(self, local: Path, remote: str) -> None:
        self._sftp(f"upload of {local.name}", lambda sftp: sftp.put(str(local), remote))

    def copy_from(self, remote: str, local: Path) -> None:
        self._sftp(f"download of {remote}", lambda sftp: sftp.get(remote, str(local)))


@hookimpl
def register_transports(register):
    register(SSHTransport)
