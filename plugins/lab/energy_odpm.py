"""odpm: Pixel on-device power monitors, /sys/bus/iio/devices/iio:device*/energy_value.

Each monitor's file reads ``t=<ms>`` and then one line per rail,
``CH<n>(T=<ms>)[<rail>], <accumulated µWs>`` (µWs = µJ). ``energy.rails`` picks
rails by name (default: every rail of every monitor).
"""

import re

from pydantic import Field

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.lab.energy import COUNTER, SysfsProbe, SysfsSettings

IIO = "sys/bus/iio/devices"
RAIL = re.compile(r"CH\d+\(T=\d+\)\[([^\]]+)\],\s*(\d+)")


class OdpmSettings(SysfsSettings):
    rails: list[str] | None = Field(None, min_length=1, description="rail names; default every rail")


class OdpmProbe(SysfsProbe):
    name = "odpm"
    kind = COUNTER
    Settings = OdpmSettings

    def __init__(self, device, transport):
        super().__init__(device, transport)
        base = self.path(IIO)
        self.files = [f"{base}/{iio}/energy_value" for iio in self.list_dir(base)
                      if iio.startswith("iio:device") and "energy_value" in self.list_dir(f"{base}/{iio}")]
        if not self.files:
            raise self.error(f"no iio:device*/energy_value under {base}")
        available = self.read_all()
        self.rails = self.settings.rails or sorted(available)
        unknown = sorted(set(self.rails) - set(available))
        if unknown:
            raise ConfigError(f"device {device.name!r}: energy.rails: {unknown} not among ODPM rails "
                              f"{sorted(available)}")

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
