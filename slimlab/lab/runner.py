"""What a runner is: a way to time one model on one device, through that device's transport.

A runner plugin subclasses :class:`Runner`, sets ``name`` and ``Settings`` (its
inventory block, named after it) and says which runtime options it honours per
format: an option set asking a device for an option its runner would ignore is
refused when the config loads, so a record never claims a setting it did not run.
"""

from abc import ABC, abstractmethod

from slimlab.errors import DeviceError
from slimlab.lab.devices import Device, Settings


class Runner(ABC):
    name: str
    Settings: type[Settings] = Settings

    def __init__(self, device: Device, transport):
        self.device = device
        self.transport = transport
        self.settings = device.runner_settings

    @classmethod
    @abstractmethod
    def honours(cls, fmt: str) -> frozenset[str]:
        """The runtime options of ``fmt`` this runner applies."""

    @abstractmethod
    def measure(self, artifact, threads: int, settings: dict) -> dict:
        """Time ``artifact`` and return what the runtime reported.

        Keys: ``runtime``, ``options`` (as the runtime reports them), ``init_ms``,
        ``first_inference_ms``, and either ``latencies_ms`` (every timed run) or
        ``summary`` (a tool's statistics); optionally ``context``, ``memory``,
        ``payload_sha256``, ``sample_cap_reached`` and anything else worth keeping.
        ``settings``: warmup, runs, min_seconds, max_samples, timeout_s and ``options``.
        """

    def fail(self, message: str) -> DeviceError:
        return DeviceError(f"device {self.device.name!r}: {message}")
