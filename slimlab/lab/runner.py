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
    """A way to time models on a device; ``register(MyRunner)`` (the class) from ``register_runners``.

    ``name`` is the inventory's ``runner:`` value and ``Settings`` the model of its block. The lab makes one per
    bench job with the device and its transport (``self.device``, ``self.transport``, ``self.settings``) and
    calls :meth:`measure`; :meth:`honours` is asked when the config loads. A runner raises
    :class:`slimlab.errors.DeviceError` (or the transport's errors) when a measurement fails.
    """

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

        ``artifact``: the verified artifact (``.kind``, ``.paths``, ``.sha256``, ``.info``); ``threads``: the
        thread count to run with; ``settings``: ``warmup``, ``runs``, ``min_seconds``, ``max_samples``,
        ``timeout_s``, ``noisy_cv`` and ``options`` (``{format: {option: value}}``, the option set).

        Returns a dict with ``runtime`` (name and version), ``options`` (as the runtime reports them),
        ``init_ms``, ``first_inference_ms``, and either ``latencies_ms`` (every timed run) or ``summary`` (a
        tool's statistics, :class:`slimlab.records.Latency`'s keys); optionally ``context``, ``memory``,
        ``payload_sha256``, ``sample_cap_reached``, and any measurement setting it changed under its own name
        (a runner that skips the warm-up returns ``warmup: 0``: the record keeps what ran). Anything else is
        kept in the record's ``raw``.
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
