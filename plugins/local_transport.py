"""local: the host itself is the device. Files are copied into its work dir, commands run as subprocesses."""

import shutil
import subprocess
from pathlib import Path

from slimlab import hookimpl
from slimlab.artifacts import sha256_file
from slimlab.errors import DeviceError
from slimlab.lab.transport import CommandResult, DeviceTimeout, DeviceToolError, Transport


class LocalTransport(Transport):
    @property
    def workdir(self) -> Path:
        # Absolute, because commands run with the work dir as their cwd.
        return Path(self.device["workdir"]).expanduser().resolve()

    def has_file(self, remote: str, sha256: str) -> bool:
        return Path(remote).is_file() and sha256_file(Path(remote)) == sha256

    def upload(self, local: Path, remote: str, sha256: str) -> None:
        target = Path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(local, partial)
        if sha256_file(partial) != sha256:
            partial.unlink()
            raise DeviceError(f"device {self.name!r}: copy of {local} does not match its sha256")
        partial.replace(target)

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceTimeout(f"device {self.name!r}: {Path(argv[0]).name} timed out after {timeout:g}s") from None
        except OSError as exc:
            raise DeviceToolError(f"device {self.name!r}: cannot run {argv[0]}: {exc.strerror}") from None
        return CommandResult(done.returncode, done.stdout, done.stderr)


@hookimpl
def register_transports(register):
    register("local", LocalTransport)
