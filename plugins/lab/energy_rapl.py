"""rapl: Intel/AMD RAPL counters from /sys/class/powercap (cumulative µJ, wrapping at max_energy_range_uj).

``energy.domains`` picks zones by name (default: every ``package-N``). Do not mix
``psys`` with ``package-N``: psys already contains the packages. Since 2020
``energy_uj`` is readable by root only.
"""

import re

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.energy import COUNTER, SysfsProbe, SysfsSettings

ZONE = re.compile(r"intel-rapl(:\d+)+")


class RaplSettings(SysfsSettings):
    domains: list[str] | None = Field(None, min_length=1, description="zone names; default every package-N")


class RaplProbe(SysfsProbe):
    name, kind, folder = "rapl", COUNTER, "sys/class/powercap"
    Settings = RaplSettings

    def discover(self):
        zones = [zone for zone in self.list_dir(self.base) if ZONE.fullmatch(zone)]
        if not zones:
            raise self.error(f"no intel-rapl zones under {self.base}")
        names = self.read_lines([f"{self.base}/{zone}/name" for zone in zones])
        wanted = self.among(self.settings.domains or [], names, "domains")
        chosen = [(zone, name) for zone, name in zip(zones, names) if name in wanted or
                  (not wanted and name.startswith("package-"))]
        if not chosen:
            raise self.error(f"no package-N zone under {self.base}; set energy.domains from {sorted(set(names))}")
        self.channels = {f"{zone} ({name})": f"{self.base}/{zone}" for zone, name in chosen}
        ranges = self.read_numbers([f"{path}/max_energy_range_uj" for path in self.channels.values()])
        self.wrap_uj = dict(zip(self.channels, ranges))

    def read(self) -> dict[str, float]:
        values = self.read_numbers([f"{path}/energy_uj" for path in self.channels.values()])
        return dict(zip(self.channels, values))


@hookimpl
def register_energy_probes(register):
    register(RaplProbe)
