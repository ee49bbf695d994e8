"""Energy per inference: sample a probe during the timed runs, subtract an idle baseline.

A probe reads one device's meters through its transport, so the same code
works on this host, over SSH and over adb. It is one of two kinds:

- ``counter``: ``read()`` gives cumulative energy counters in µJ per channel
  (RAPL ``energy_uj``, hwmon ``energy*_input``, Pixel ODPM ``energy_value``).
  Counters are preferred: the meter itself integrates, between any two reads.
- ``power``: ``read()`` gives instantaneous power in µW per channel (hwmon
  ``power*_input`` or V×I, the Android battery's V×I); it is integrated here with
  the trapezoid rule, so it needs several samples inside the timed window.

:func:`measure` samples while the runner works, then samples the idle device for
the same duration, and reports joules per inference net of that baseline.
"""

import posixpath
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pydantic import Field

from slimlab.errors import ConfigError, DeviceError
from slimlab.lab.devices import Settings
from slimlab.records import Energy

COUNTER, POWER, NONE = "counter", "power", "none"
MICRO = 1e-6


class ProbeSettings(Settings):
    """The ``energy`` block's keys that every probe has (besides ``probe``)."""

    interval_s: float = Field(0.1, gt=0, le=60, description="sampling interval")
    settle_s: float = Field(1.0, ge=0, le=600, description="pause between the work and the idle baseline")


class EnergyProbe(ABC):
    """One device's energy meter; ``register(MyProbe)`` (the class) from ``register_energy_probes``.

    A subclass sets ``name`` (the inventory's ``energy.probe``), ``kind`` (:data:`COUNTER` or :data:`POWER`) and
    ``Settings`` (a :class:`ProbeSettings` model of the ``energy`` block's other keys), and implements
    :meth:`read`. It is made with the device and a transport of its own, and read every ``interval_s`` while the
    runner works and then while the device idles; :meth:`error` makes the one-line error to raise.
    """

    name: str  # as registered and named in the inventory's ``energy.probe``
    kind: str
    Settings: type[ProbeSettings] = ProbeSettings
    # Counter channels that wrap, with the value at which they do (RAPL's max_energy_range_uj).
    wrap_uj: dict[str, float] = {}

    def __init__(self, device, transport):
        self.device = device
        self.transport = transport
        self.settings = device.energy

    @abstractmethod
    def read(self) -> dict[str, float]:
        """Per channel: cumulative µJ (``counter``) or instantaneous µW (``power``)."""

    def error(self, message: str) -> DeviceError:
        return DeviceError(f"device {self.device.name!r}: energy probe {self.name!r}: {message}")


class SysfsSettings(ProbeSettings):
    """The ``energy`` block of a probe that reads sysfs files: where they are, and how long a read may take."""

    root: str = Field("/", min_length=1, description="prefix of the sysfs paths on the device (tests: a temp tree)")
    timeout_s: float = Field(10.0, gt=0, le=600, description="per read of the meter files")


class SysfsProbe(EnergyProbe):
    """A probe over sysfs files, read with ``cat``/``ls`` through the transport.

    A subclass names the ``folder`` its meter lives in and finds the meter's files there in
    :meth:`discover`, which runs when the probe is made. ``energy.root`` prefixes every path,
    so tests can point a probe at a tree in a temp dir.
    """

    Settings = SysfsSettings
    folder: str = ""  # the meter's folder, when it has one

    def __init__(self, device, transport):
        super().__init__(device, transport)
        self.base = self.path(self.folder)
        self.discover()

    def discover(self) -> None:
        """Find the meter's files under ``self.base``; raise naming what is missing. A meter whose files its
        settings name needs no search: it fails at its first read instead."""

    def path(self, *parts: str) -> str:
        return posixpath.join(self.settings.root, *parts)

    def among(self, wanted: list[str], available: list[str], key: str) -> list[str]:
        """``wanted`` (from ``energy.<key>``), if the meter has each; else one ConfigError line."""
        unknown = sorted(set(wanted) - set(available))
        if unknown:
            raise ConfigError(f"device {self.device.name!r}: energy.{key}: {unknown} not among "
                              f"{sorted(set(available))} on this {self.name} meter")
        return wanted

    def _run(self, argv: list[str]) -> str:
        result = self.transport.run(argv, timeout=self.settings.timeout_s)
        if result.returncode != 0:
            # cat and ls name the path they could not read in their first stderr line.
            detail = (result.stderr.strip().splitlines() or [f"{argv[0]} exited {result.returncode}"])[0]
            raise self.error(detail)
        return result.stdout

    def list_dir(self, path: str) -> list[str]:
        return self._run(["ls", "-1", path + "/"]).split()

    def read_text(self, *paths: str) -> str:
        return self._run(["cat", *paths])

    def read_lines(self, paths: list[str]) -> list[str]:
        """The one-line contents of single-value sysfs files, read with one command."""
        lines = self.read_text(*paths).splitlines()
        if len(lines) != len(paths):
            raise self.error(f"expected one line from each of {', '.join(paths)}, got {len(lines)} lines")
        return [line.strip() for line in lines]

    def read_numbers(self, paths: list[str]) -> list[float]:
        return [self.number(text, path) for text, path in zip(self.read_lines(paths), paths)]

    def number(self, text: str, path: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise self.error(f"{path} holds {text!r}, not a number") from None


@dataclass(frozen=True)
class Reading:
    time_s: float  # host monotonic clock, midway through the read
    values: dict[str, float]


def timed_window(raw: dict) -> tuple[float, int, float]:
    """The wall time (s) and count of a runner's timed inferences, and how long before it returned they ended.

    The python payload says all three (it evaluates the model after timing it); native tools
    give only a summary (``n``, ``mean_ms``) and exit when the timed runs end.
    """
    if "timed_s" in raw:
        return raw["timed_s"], len(raw["latencies_ms"]), raw.get("after_timed_s", 0.0)
    if raw.get("latencies_ms"):
        return sum(raw["latencies_ms"]) / 1000, len(raw["latencies_ms"]), 0.0
    summary = raw["summary"]
    return summary["n"] * summary["mean_ms"] / 1000, summary["n"], 0.0


def _read(probe: EnergyProbe) -> Reading:
    before = time.monotonic()
    values = probe.read()
    return Reading((before + time.monotonic()) / 2, values)


class _Sampler(threading.Thread):
    """Reads the probe every ``interval_s`` until halted; a failed read is re-raised by :meth:`readings`."""

    def __init__(self, probe: EnergyProbe, interval_s: float, first: Reading):
        super().__init__(name=f"energy-{probe.name}", daemon=True)
        self.probe, self.interval_s = probe, interval_s
        self._readings = [first]
        self._halt = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._halt.wait(self.interval_s):
                self._readings.append(_read(self.probe))
        except Exception as exc:  # handed to the caller's thread by readings()
            self._error = exc

    def halt(self) -> None:
        self._halt.set()
        self.join()

    def readings(self) -> list[Reading]:
        if self._error is not None:
            raise self._error
        return [*self._readings, _read(self.probe)]


def sample_for(probe: EnergyProbe, duration_s: float, interval_s: float) -> list[Reading]:
    readings = [_read(probe)]
    end = readings[0].time_s + duration_s
    while (now := time.monotonic()) < end:
        time.sleep(min(interval_s, end - now))
        readings.append(_read(probe))
    return readings


def cumulative_joules(readings: list[Reading], probe: EnergyProbe) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and energy used since the first reading (J), over all channels."""
    times = np.array([r.time_s for r in readings])
    channels = sorted(readings[0].values)
    values = np.array([[r.values[c] for c in channels] for r in readings], dtype=np.float64)
    if probe.kind == COUNTER:
        steps = np.diff(values, axis=0)
        for column, channel in enumerate(channels):
            backwards = steps[:, column] < 0
            if backwards.any() and channel not in probe.wrap_uj:
                raise probe.error(f"counter {channel} went backwards and has no known wrap range")
            # A counter that passed its maximum restarted from 0 (RAPL: max_energy_range_uj).
            steps[backwards, column] += probe.wrap_uj.get(channel, 0.0)
        increments = steps.sum(axis=1) * MICRO
    else:
        power_w = values.sum(axis=1) * MICRO
        increments = (power_w[1:] + power_w[:-1]) / 2 * np.diff(times)
    return times, np.concatenate([[0.0], np.cumsum(increments)])


def energy_result(probe: EnergyProbe, active: list[Reading], idle: list[Reading],
                  window_s: float, inferences: int, end_s: float) -> Energy:
    """Net joules per inference over the ``window_s`` before ``end_s``, when the timed runs ended."""
    times, joules = cumulative_joules(active, probe)
    start_s = end_s - window_s
    if start_s < times[0] or end_s > times[-1]:
        raise probe.error(f"the samples do not span the timed window ({window_s:.3f} s)")
    inside = int(np.count_nonzero((times >= start_s) & (times <= end_s)))
    if probe.kind == POWER and inside < 3:
        raise probe.error(f"only {inside} power samples fell in the {window_s:.3f} s timed window; "
                          "raise min_seconds or lower energy.interval_s")
    window_j = float(np.interp(end_s, times, joules) - np.interp(start_s, times, joules))
    idle_times, idle_joules = cumulative_joules(idle, probe)
    idle_w = float(idle_joules[-1] / (idle_times[-1] - idle_times[0]))
    return Energy(
        probe=probe.name,
        joules_per_inference=(window_j - idle_w * window_s) / inferences,
        avg_power_w=window_j / window_s,
        idle_power_w=idle_w,
        window_s=window_s,
        inferences=inferences,
        samples=inside,
    )


def measure(probe: EnergyProbe, work: Callable[[], dict]) -> tuple[dict, Energy]:
    """Run ``work`` (a runner's ``measure``) while sampling, then take an idle baseline as long as its timed window.

    The baseline follows the work because only then is the window's length known;
    ``energy.settle_s`` lets the device return to idle first.
    """
    if probe.kind == NONE:
        return work(), Energy(probe=probe.name, reason=probe.reason)
    interval_s = probe.settings.interval_s
    sampler = _Sampler(probe, interval_s, _read(probe))  # the first read also proves the probe works
    sampler.start()
    try:
        raw = work()
        end_s = time.monotonic()
    finally:
        sampler.halt()
    active = sampler.readings()
    window_s, inferences, after_s = timed_window(raw)
    time.sleep(probe.settings.settle_s)
    idle = sample_for(probe, window_s, interval_s)
    return raw, energy_result(probe, active, idle, window_s, inferences, end_s - after_s)
