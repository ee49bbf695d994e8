"""local: the host itself is the device. Files are copied into its work dir, commands run as subprocesses.

Each command runs in a process group of its own, which is killed when the command
times out or when this job is interrupted; on Linux the kernel also kills it when the
job itself is killed (PR_SET_PDEATHSIG): no payload outlives the job that started it.
util-linux's ``setpriv`` sets that flag where it is installed: a ``preexec_fn`` would make
Python fork the whole job (tens of ms for a big process, more on a busy host) instead of
spawning, and the energy probe reads its meter this way many times a second.
"""

import ctypes
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from slimlab import hookimpl
from slimlab.artifacts import sha256_file
from slimlab.lab.transport import CommandResult, DeviceTimeout, DeviceToolError, Transport


_PR_SET_PDEATHSIG = 1
# Looked up here, not in the forked child: a dlopen there could deadlock on a lock another thread held at fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_SETPRIV = shutil.which("setpriv") if _prctl else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when the process that started me dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalTransport(Transport):
    name = "local"
    default_workdir = "~/.cache/slimlab/device"
    runs_on_host = True

    @property
    def workdir(self) -> Path:
        # Absolute, because commands run with the work dir as their cwd.
        return Path(self.device.workdir or self.default_workdir).expanduser().resolve()

    @property
    def physical_id(self) -> str:
        return f"local:{platform.node()}"

    def ensure_workdir(self) -> None:
        """The work dir must belong to this user and be closed to others: pushed files are run there."""
        try:
            self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = self.workdir.stat()
        except OSError as exc:
            raise DeviceToolError(f"device {self.device_name!r}: cannot create workdir {self.workdir}: "
                                  f"{exc.strerror}") from None
        if info.st_uid != os.getuid() or info.st_mode & stat.S_IWOTH:
            raise DeviceToolError(f"device {self.device_name!r}: workdir {self.workdir} is not owned by this user, "
                                  "or others may write to it; set `workdir` to a folder of your own")

    def has_file(self, remote: str, sha256: str) -> bool:
        return Path(remote).is_file() and sha256_file(Path(remote)) == sha256

    def upload(self, local: Path, remote: str, sha256: str) -> None:
        target = Path(remote)
        self.ensure_workdir()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own: two jobs may push the same blob at once.
            fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            os.close(fd)
            partial = Path(partial)
            try:
                partial.write_bytes(Path(local).read_bytes())
                if sha256_file(partial) != sha256:
                    raise DeviceToolError(f"device {self.device_name!r}: copy of {local} does not match its sha256")
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        except OSError as exc:
            raise DeviceToolError(f"device {self.device_name!r}: cannot store {local.name} in {target.parent}: "
                                  f"{exc.strerror or exc}") from None

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        self.ensure_workdir()
        try:
            spawned = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else argv
            process = subprocess.Popen(spawned, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                       preexec_fn=_die_with_parent if _prctl and not _SETPRIV else None)
        except OSError as exc:
            raise DeviceToolError(f"device {self.device_name!r}: cannot run {argv[0]}: {exc.strerror}") from None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceTimeout(f"device {self.device_name!r}: {Path(argv[0]).name} timed out after {timeout:g}s") from None
        finally:
            if process.poll() is None:  # timed out, or this job was interrupted: take the whole group down
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if _SETPRIV and process.returncode in (126, 127) and stderr.startswith("setpriv: failed to execute"):
            reason = stderr.strip().rsplit(": ", 1)[-1]
            raise DeviceToolError(f"device {self.device_name!r}: cannot run {argv[0]}: {reason}")
        return CommandResult(process.returncode, stdout, stderr)


@hookimpl
def register_transports(register):
    register(LocalTransport)
