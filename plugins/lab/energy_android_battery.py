"""android_battery: the battery's current × voltage from /sys/class/power_supply/<supply>/.

``voltage_now`` is µV. ``current_now`` is µA on most phones but mA on some, and
its sign while discharging differs by vendor, so the inventory states both:
``current_sign`` (the factor that makes discharge positive) and ``current_unit``.
:func:`suggest_calibration` measures them on an idle, unplugged phone.
While the phone charges the battery current includes the charger's, so the
probe refuses to measure; use adb over Wi-Fi.
"""

import dataclasses
import statistics
import time
from typing import Literal

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.energy import POWER, SysfsProbe, SysfsSettings

ON_BATTERY = ("Discharging", "Not charging")
MICROAMPS = {"uA": 1.0, "mA": 1000.0}
# An awake idle phone draws 5 mA to 2 A: above 5000 the unit must be µA (5000 mA is 5 A).
MICROAMP_THRESHOLD = 5000


class BatterySettings(SysfsSettings):
    supply: str = Field("battery", min_length=1, description="/sys/class/power_supply/<supply>")
    current_sign: Literal[-1, 1] = Field(description="the factor that makes discharge positive (suggest_calibration)")
    current_unit: Literal["uA", "mA"] = Field(description="unit of current_now (suggest_calibration)")


class BatteryProbe(SysfsProbe):
    name, kind, folder = "android_battery", POWER, "sys/class/power_supply"
    Settings = BatterySettings

    def discover(self):
        supply = f"{self.base}/{self.settings.supply}"
        self.current, self.voltage = f"{supply}/current_now", f"{supply}/voltage_now"
        (status,) = self.read_lines([f"{supply}/status"])
        if status not in ON_BATTERY:
            raise self.error(f"battery status is {status!r}: the current includes the charger's; "
                             "unplug USB (adb over Wi-Fi) before measuring energy")

    def current_and_voltage(self) -> tuple[float, float]:
        current, voltage = self.read_numbers([self.current, self.voltage])
        return current, voltage

    def read(self) -> dict[str, float]:
        current, voltage_uv = self.current_and_voltage()
        sign, unit = self.settings.current_sign, MICROAMPS[self.settings.current_unit]
        return {"battery": sign * current * unit * voltage_uv * 1e-6}  # µA × µV = 1e-6 µW


def suggest_calibration(device, transport, samples: int = 20, interval_s: float = 0.2) -> dict:
    """Sample the idle, unplugged phone; discharge must come out positive, so the sign and unit follow.

    ``device``'s energy block need not hold ``current_sign``/``current_unit`` yet: this finds them.
    """
    uncalibrated = BatterySettings.model_construct(**{**SysfsSettings().model_dump(), **dict(device.energy)})
    probe = BatteryProbe(dataclasses.replace(device, energy=uncalibrated), transport)
    readings = []
    for _ in range(samples):
        readings.append(probe.current_and_voltage())
        time.sleep(interval_s)
    current = statistics.median(c for c, _ in readings)
    voltage_uv = statistics.median(v for _, v in readings)
    if not 2.5e6 <= voltage_uv <= 5e6:
        raise probe.error(f"{probe.voltage} reads {voltage_uv:g}, not a battery voltage in µV")
    if current == 0:
        raise probe.error(f"{probe.current} reads 0 while discharging; this phone does not report its current")
    unit = "uA" if abs(current) >= MICROAMP_THRESHOLD else "mA"
    sign = 1 if current > 0 else -1
    return {"current_sign": sign, "current_unit": unit,
            "idle_power_w": abs(current) * MICROAMPS[unit] * voltage_uv * 1e-12}


@hookimpl
def register_energy_probes(register):
    register(BatteryProbe)
