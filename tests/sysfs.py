"""Sysfs-style trees for the energy-probe tests, with the kernel's file names, formats and units.

A :class:`PowerModel` process advances every meter in real time from a load
level: ``idle_w`` until a test sets ``busy``, then ``busy_w``. Each meter takes
a fixed share of that power, so a test knows the joules a probe should find.
Files are replaced atomically, so ``cat`` never sees half a value.
"""

import multiprocessing
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "data" / "device-tools"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


class Meter(ABC):
    """One thing the model advances; ``share`` is its fraction of the device's power."""

    def __init__(self, share: float):
        self.share = share

    @abstractmethod
    def advance(self, power_w: float, dt_s: float) -> None:
        """Account for ``dt_s`` seconds at ``power_w`` (the whole device's) and rewrite the files."""


class RaplZone(Meter):
    """/sys/class/powercap/intel-rapl:N[:M]/{name, energy_uj, max_energy_range_uj}; energy wraps to 0."""

    def __init__(self, root: Path, zone: str, name: str, share: float, max_range_uj: int = 262_143_328_850,
                 start_uj: int = 0):
        super().__init__(share)
        self.dir = root / "sys/class/powercap" / zone
        self.max_range_uj, self.energy_uj = max_range_uj, float(start_uj)
        write(self.dir / "name", f"{name}\n")
        write(self.dir / "max_energy_range_uj", f"{max_range_uj}\n")
        self.advance(0.0, 0.0)

    def advance(self, power_w, dt_s):
        self.energy_uj = (self.energy_uj + power_w * self.share * dt_s * 1e6) % self.max_range_uj
        write(self.dir / "energy_uj", f"{int(self.energy_uj)}\n")


class HwmonChannel(Meter):
    """/sys/class/hwmon/hwmonN/: ``name`` and channel ``n`` as energy (µJ), power (µW) or in (mV) + curr (mA).

    An INA3221 also lists its shunt voltages as in4..in6, which have no current to pair with.
    """

    def __init__(self, root: Path, hwmon: str, chip: str, n: int, signals: tuple[str, ...], share: float,
                 bus_volts: float = 5.0):
        super().__init__(share)
        self.dir = root / "sys/class/hwmon" / hwmon
        self.n, self.signals, self.bus_volts, self.energy_uj = n, signals, bus_volts, 0.0
        write(self.dir / "name", f"{chip}\n")
        if "curr" in signals:
            write(self.dir / f"in{n + 3}_input", "12\n")  # shunt voltage, mV
        self.advance(0.0, 0.0)

    def advance(self, power_w, dt_s):
        watts = power_w * self.share
        self.energy_uj += watts * dt_s * 1e6
        if "energy" in self.signals:
            write(self.dir / f"energy{self.n}_input", f"{int(self.energy_uj)}\n")
        if "power" in self.signals:
            write(self.dir / f"power{self.n}_input", f"{round(watts * 1e6)}\n")
        if "curr" in self.signals:
            write(self.dir / f"in{self.n}_input", f"{round(self.bus_volts * 1e3)}\n")
            write(self.dir / f"curr{self.n}_input", f"{round(watts / self.bus_volts * 1e3)}\n")


class Battery(Meter):
    """/sys/class/power_supply/battery/{status, voltage_now (µV), current_now (µA or mA, vendor's sign)}."""

    UNIT_PER_AMP = {"uA": 1e6, "mA": 1e3}

    def __init__(self, root: Path, discharge_sign: int, unit: str, volts: float = 3.85,
                 status: str = "Discharging", share: float = 1.0):
        super().__init__(share)
        self.dir = root / "sys/class/power_supply/battery"
        self.discharge_sign, self.unit, self.volts = discharge_sign, unit, volts
        write(self.dir / "status", f"{status}\n")
        write(self.dir / "voltage_now", f"{round(volts * 1e6)}\n")
        self.advance(0.0, 0.0)

    def advance(self, power_w, dt_s):
        amps = power_w * self.share / self.volts
        write(self.dir / "current_now", f"{round(self.discharge_sign * amps * self.UNIT_PER_AMP[self.unit])}\n")


class OdpmMonitor(Meter):
    """/sys/bus/iio/devices/iio:deviceN/energy_value, starting from the real sample's counters.

    ``rail_shares`` says which rails carry the load, and how much of it.
    """

    def __init__(self, root: Path, iio: str, rail_shares: dict[str, float]):
        super().__init__(sum(rail_shares.values()))
        self.path = root / "sys/bus/iio/devices" / iio / "energy_value"
        write(self.path.parent / "name", "odpm\n")
        lines = (SAMPLES / "pixel_odpm_energy_value.txt").read_text().splitlines()
        self.time_ms = int(lines[0].removeprefix("t="))
        self.rails = {line.split("[")[1].split("]")[0]: float(line.rsplit(", ", 1)[1]) for line in lines[1:]}
        self.rail_shares = rail_shares
        self.advance(0.0, 0.0)

    def advance(self, power_w, dt_s):
        self.time_ms += dt_s * 1e3
        for rail, share in self.rail_shares.items():
            self.rails[rail] += power_w * share * dt_s * 1e6
        t = int(self.time_ms)
        body = "".join(f"CH{i}(T={t})[{rail}], {int(uws)}\n" for i, (rail, uws) in enumerate(self.rails.items()))
        write(self.path, f"t={t}\n{body}")


class PowerModel:
    """Advances every meter from the load level every ``tick_s``, in real time.

    It runs in its own process: in a thread it would share the GIL with the
    sampler it is meant to feed, and stall on a busy machine.
    """

    def __init__(self, meters: list[Meter], idle_w: float, busy_w: float, tick_s: float = 0.002):
        context = multiprocessing.get_context("fork")
        self.meters, self.idle_w, self.busy_w, self.tick_s = meters, idle_w, busy_w, tick_s
        self._busy = context.Value("b", False)
        self._applied = context.Value("b", False)  # the load level the files show
        self._halt = context.Event()
        self._process = context.Process(target=self._run, name="sysfs-power-model", daemon=True)

    @property
    def busy(self) -> bool:
        return bool(self._busy.value)

    @busy.setter
    def busy(self, value: bool) -> None:
        """Change the load and wait until the files follow, as a real meter would at once."""
        self._busy.value = value
        deadline = time.monotonic() + 5
        while bool(self._applied.value) != value:
            if time.monotonic() > deadline:
                raise RuntimeError("the sysfs power model is not running (use it as a context manager)")
            time.sleep(self.tick_s / 2)

    def _run(self):
        try:  # a hardware meter never waits for a CPU; as root, neither does this one
            os.nice(-15)
        except PermissionError:
            pass
        last = time.monotonic()
        while not self._halt.wait(self.tick_s):
            now = time.monotonic()
            power_w = self.busy_w if self.busy else self.idle_w
            for meter in self.meters:
                meter.advance(power_w, now - last)
            self._applied.value = power_w == self.busy_w
            last = now

    def __enter__(self):
        self._process.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self._process.join(timeout=10)

    def workload(self, seconds: float, inferences: int):
        """A runner's ``measure`` stand-in: busy for ``seconds``, returning the python runner's raw dict."""

        def work() -> dict:
            self.busy = True
            time.sleep(seconds)
            self.busy = False
            return {"latencies_ms": [seconds * 1e3 / inferences] * inferences}

        return work


def expected_joules_per_inference(model: PowerModel, share: float, seconds: float, inferences: int) -> float:
    return (model.busy_w - model.idle_w) * share * seconds / inferences


class CpuDrivenModel(PowerModel):
    """Power follows this machine's real CPU use (from /proc/stat): ``idle_w`` when idle, ``busy_w`` when every
    core is busy. A benchmark that burns more CPU per inference costs more energy per inference, as on a board."""

    def __init__(self, meters: list[Meter], idle_w: float, busy_w: float, tick_s: float = 0.02):
        super().__init__(meters, idle_w, busy_w, tick_s)

    @staticmethod
    def _jiffies() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self):
        last, (busy_before, total_before) = time.monotonic(), self._jiffies()
        while not self._halt.wait(self.tick_s):
            now, (busy, total) = time.monotonic(), self._jiffies()
            use = (busy - busy_before) / (total - total_before) if total > total_before else 0.0
            for meter in self.meters:
                meter.advance(self.idle_w + (self.busy_w - self.idle_w) * use, now - last)
            self._applied.value = True
            last, busy_before, total_before = now, busy, total
