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

    def compare(self, candidate, baseline, threads: int, settings: dict, rounds: int) -> dict:
        """Time ``baseline`` and ``candidate`` in alternating rounds; ``{"rounds": [{"baseline": [ms...],
        "candidate": [ms...]}, ...]}``. This default runs one measurement per side and round, each an equal
        share of ``settings``; a runner that can hold both models at once does better (python)."""
        share = {**settings, "runs": max(1, -(-settings["runs"] // rounds)),
                 "min_seconds": settings["min_seconds"] / rounds}
        result = {"rounds": []}
        for index in range(rounds):
            order = (("baseline", baseline), ("candidate", candidate))
            timed = {}
            for side, artifact in order if index % 2 == 0 else order[::-1]:
                raw = self.measure(artifact, threads, share)
                timed[side] = raw.get("latencies_ms") or [raw["summary"]["median_ms"]]
                result.update({key: raw[key] for key in ("runtime", "options", "context") if key in raw})
            result["rounds"].append(timed)
        return result

    def fail(self, message: str) -> DeviceError:
        return DeviceError(f"device {self.device.name!r}: {message}")
