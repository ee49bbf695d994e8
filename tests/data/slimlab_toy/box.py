"""box: a device that is a folder on this host; commands run there as subprocesses."""

import shutil
import subprocess
from pathlib import Path

from pydantic import Field

from slimlab.api import CommandResult, DeviceTimeout, Settings, Transport, hookimpl


class BoxSettings(Settings):
    root: str = Field(min_length=1, description="the folder that plays the device")


class BoxTransport(Transport):
    name = "box"
    Settings = BoxSettings
    default_workdir = "box"
    runs_on_host = True  # its bench jobs hold every core, like the built-in `local`

    @property
    def workdir(self) -> Path:
        return Path(self.settings.root).resolve()

    @property
    def physical_id(self) -> str:  # what the lab locks: one benchmark at a time per box
        return f"box:{self.workdir}"

    def has_file(self, remote, sha256):
        return Path(remote).is_file()

    def upload(self, local, remote, sha256):
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, f"{remote}.part")
        Path(f"{remote}.part").replace(remote)

    def run(self, argv, timeout) -> CommandResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceTimeout(f"device {self.device_name!r}: {argv[0]} timed out after {timeout:g} s") from None
        return CommandResult(done.returncode, done.stdout, done.stderr)


@hookimpl
def register_transports(register):
    register(BoxTransport)
