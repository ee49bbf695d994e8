"""ssh: a board reached over OpenSSH (paramiko), with its host key checked.

Inventory entry (``ssh:`` block, see workflow/schemas/devices.schema.yaml)::

    transport: ssh
    ssh: {host: 10.0.0.7, user: pi, key_file: ~/.ssh/id_ed25519}

* Host keys are checked against ``known_hosts`` (default ``~/.ssh/known_hosts``);
  an unknown host is refused unless ``trust_on_first_use: true``, which is
  logged and saves the key it accepted.
* One connection serves every upload and command of a transport; it is
  reopened if it died. Connecting and uploading retry with exponential backoff.
* Uploads go to a temporary name over SFTP, are checked with ``sha256sum`` on
  the board and only then renamed into place.
* Every command line is built from ``shlex.quote``'d words and has a deadline.
  When it passes, the board is probed: if it still answers, the command's
  process group is killed and the error is a ``timeout``; if not, ``offline``.
"""

import errno
import getpass
import logging
import os
import select
import shlex
import time
from pathlib import Path

import paramiko

from slimlab import hookimpl
from slimlab.lab.transport import CommandResult, DeviceOffline, DeviceTimeout, DeviceToolError, ShellTransport

log = logging.getLogger(__name__)

# SFTP errors that mean "the board refused", not "the link failed": retrying will not help.
_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOSPC, errno.EROFS, errno.EISDIR, errno.ENOTDIR}
_LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


class SSHTransport(ShellTransport):
    def __init__(self, device: dict):
        super().__init__(device)
        ssh = device["ssh"]
        self.host = ssh["host"]
        self.port = ssh.get("port", 22)
        self.user = ssh.get("user") or getpass.getuser()
        key_file = ssh.get("key_file")
        self.key_file = str(Path(key_file).expanduser()) if key_file else None
        self.known_hosts = Path(ssh.get("known_hosts") or "~/.ssh/known_hosts").expanduser()
        self.trust_on_first_use = ssh.get("trust_on_first_use", False)
        self.connect_timeout = ssh.get("connect_timeout_s", 10.0)
        self.keepalive = ssh.get("keepalive_s", 15)
        self.attempts = ssh.get("attempts", 3)
        self.passphrase_env = ssh.get("key_passphrase_env")
        self._client: paramiko.SSHClient | None = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    # --- connection ---------------------------------------------------------

    def client(self) -> paramiko.SSHClient:
        """The open connection, (re)connecting with retries if there is none."""
        if self._client is None or not self._client.get_transport() or not self._client.get_transport().is_active():
            self.close()
            for attempt in self.retrying(self.attempts):
                with attempt:
                    self._client = self._connect()
        return self._client

    def _passphrase(self) -> str | None:
        if not self.passphrase_env:
            return None
        if self.passphrase_env not in os.environ:
            raise DeviceToolError(
                f"device {self.name!r}: ssh.key_passphrase_env names ${self.passphrase_env}, which is not set"
            )
        return os.environ[self.passphrase_env]

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        if self.trust_on_first_use:
            log.warning("device %r: trust_on_first_use: an unknown host key for %s is accepted and saved to %s",
                        self.name, self.target, self.known_hosts)
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        t = self.connect_timeout
        try:
            client.connect(
                self.host, port=self.port, username=self.user, key_filename=self.key_file,
                passphrase=self._passphrase(),
                # Without a key file, use the agent and ~/.ssh/id_*, as ssh(1) does.
                look_for_keys=self.key_file is None, allow_agent=self.key_file is None,
                timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise DeviceToolError(
                f"device {self.name!r}: host key of {self.target} does not match {self.known_hosts}; "
                "refusing to connect (was the board reinstalled? fix known_hosts)"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise DeviceToolError(
                f"device {self.name!r}: key {self.key_file} is encrypted; set ssh.key_passphrase_env"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise DeviceToolError(f"device {self.name!r}: {self.target} refused the login: {exc}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise DeviceToolError(
                    f"device {self.name!r}: host key of {self.target} is not in {self.known_hosts}; add it "
                    "(ssh-keyscan) or set ssh.trust_on_first_use: true"
                ) from None
            raise DeviceOffline(f"device {self.name!r}: cannot connect to {self.target}: {exc}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise DeviceOffline(f"device {self.name!r}: cannot connect to {self.target}: {exc}") from None
        if self.trust_on_first_use:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            client.save_host_keys(str(self.known_hosts))
        client.get_transport().set_keepalive(self.keepalive)
        log.debug("device %r: connected to %s", self.name, self.target)
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- commands -----------------------------------------------------------

    def sh(self, command: str, timeout: float) -> CommandResult:
        try:
            channel = self.client().get_transport().open_session(timeout=self.connect_timeout)
            # The session's shell is a process group leader (sshd calls setsid):
            # its pid, printed first, is what a timeout kills.
            channel.exec_command(f"echo $$; {command}")
            channel.shutdown_write()
        except _LINK_ERRORS as exc:
            self.close()
            raise DeviceOffline(f"device {self.name!r}: {self.target} dropped the session: {exc}") from None
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
            raise DeviceOffline(f"device {self.name!r}: connection to {self.target} dropped mid-command")
        _pid, _, stdout = out.decode(errors="replace").partition("\n")
        return CommandResult(status, stdout, err.decode(errors="replace"))

    def _timed_out(self, out: bytes, timeout: float):
        """Probe the board after a deadline: kill the command if it answers (timeout), else offline."""
        pid = out.split(b"\n", 1)[0].decode(errors="replace").strip()
        probe_timeout = min(self.connect_timeout, 5)
        try:
            # The same connection, no retries: a board that went silent must not cost another minute.
            probe = self._client.get_transport().open_session(timeout=probe_timeout)
            probe.settimeout(probe_timeout)
            probe.exec_command(f"kill -KILL -- -{shlex.quote(pid)}" if pid.isdigit() else "true")
            probe_deadline = time.monotonic() + probe_timeout
            while not probe.exit_status_ready():
                if time.monotonic() > probe_deadline:
                    raise TimeoutError("the probe got no answer")
                time.sleep(0.05)
            probe.close()
        except _LINK_ERRORS:
            self.close()
            raise DeviceOffline(
                f"device {self.name!r}: no answer from {self.target} for {timeout:g}s and it is unreachable now"
            ) from None
        raise DeviceTimeout(f"device {self.name!r}: command on {self.target} timed out after {timeout:g}s")

    # --- files --------------------------------------------------------------

    def _sftp(self, what: str, transfer) -> None:
        """Run one SFTP transfer; link failures drop the connection and are retried by the caller."""
        try:
            with self.client().open_sftp() as sftp:
                sftp.get_channel().settimeout(self.connect_timeout)  # a stalled link fails, not hangs
                transfer(sftp)
        except _LINK_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno in _FILE_ERRNOS:
                raise DeviceToolError(f"device {self.name!r}: {what} failed: {exc.strerror}") from None
            self.close()
            raise DeviceOffline(f"device {self.name!r}: {what} over {self.target} failed: {exc!r}") from None

    def copy_to(self, local: Path, remote: str) -> None:
        self._sftp(f"upload of {local.name}", lambda sftp: sftp.put(str(local), remote))

    def copy_from(self, remote: str, local: Path) -> None:
        self._sftp(f"download of {remote}", lambda sftp: sftp.get(remote, str(local)))


@hookimpl
def register_transports(register):
    register("ssh", SSHTransport)
