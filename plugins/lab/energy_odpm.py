"""odpm: Pixel on-device power monitors, /sys/bus/iio/devices/iio:device*/energy_value.

Each monitor's file reads ``t=<ms>`` and then one line per rail,
``CH<n>(T=<ms>)[<rail>], <accumulated µWs>`` (µWs = µJ). ``energy.rails`` picks
rails by name (default: every rail of every monitor).
"""

import re

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.energy import COUNTER, SysfsProbe, SysfsSettings

RAIL = re.compile(r"CH\d+\(T=\d+\)\[([^\]]+)\],\s*(\d+)")


class OdpmSettings(SysfsSettings):
    rails: list[str] | None = Field(None, min_length=1, description="rail names; default every rail")


class OdpmProbe(SysfsProbe):
    name, kind, folder = "odpm", COUNTER, "sys/bus/iio/devices"
    Settings = OdpmSettings

    def discover(self):
        self.files = [f"{self.base}/{iio}/energy_value" for iio in self.list_dir(self.base)
                      if iio.startswith("iio:device") and "energy_value" in self.list_dir(f"{self.base}/{iio}")]
        if not self.files:
            raise self.error(f"no iio:device*/energy_value under {self.base}")
        available = sorted(self.read_all())
        self.rails = self.among(self.settings.rails, available, "rails") if self.settings.rails else available

    def read_all(self) -> dict[str, float]:
        text = self.read_text(*self.files)
        headers = sum(line.startswith("t=") for line in text.splitlines())
        found = RAIL.findall(text)
        if headers != len(self.files) or not found:
            raise self.error(f"{', '.join(self.files)}: expected 't=<ms>' then 'CH<n>(T=<ms>)[<rail>], <µWs>' "
                             f"lines per file, got {text[:80]!r}")
        rails = {name: float(value) for name, value in found}
        if len(rails) != len(found):
            twice = sorted({name for name, _ in found if sum(n == name for n, _ in found) > 1})
            raise self.error(f"rails {', '.join(twice)} appear in more than one of {', '.join(self.files)}")
        return rails

    def read(self) -> dict[str, float]:
        rails = self.read_all()
        return {rail: rails[rail] for rail in self.rails}


@hookimpl
def register_energy_probes(register):
    register(OdpmProbe)
