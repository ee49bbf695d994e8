"""What every transport offers the runners: content-addressed push, run, close."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from slimlab.artifacts import sha256_file


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """A way to reach one device. ``device`` is its validated inventory entry."""

    def __init__(self, device: dict):
        self.device = device

    @property
    def name(self) -> str:
        return self.device["name"]

    @property
    def workdir(self) -> PurePosixPath:
        return PurePosixPath(self.device["workdir"])

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

    def close(self) -> None:
        """Release connections. Local transports hold none."""
