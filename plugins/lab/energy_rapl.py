"""rapl: Intel/AMD RAPL counters from /sys/class/powercap (cumulative µJ, wrapping at max_energy_range_uj).

``energy.domains`` picks zones by name (default: every ``package-N``). Do not mix
``psys`` with ``package-N``: psys already contains the packages. Since 2020
``energy_uj`` is readable by root only.
"""

import re

from pydantic import Field

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.lab.energy import COUNTER, SysfsProbe, SysfsSettings

POWERCAP = "sys/class/powercap"
ZONE = re.compile(r"intel-rapl(:\d+)+")


class RaplSettings(SysfsSettings):
    domains: list[str] | None = Field(None, min_length=1, description="zone names; default every package-N")


class RaplProbe(SysfsProbe):
    name = "rapl"
    kind = COUNTER
    Settings = RaplSettings

    def __init__(self, device, transport):
        super().__init__(device, transport)
        base = self.path(POWERCAP)
        zones = [zone for zone in self.list_dir(base) if ZONE.fullmatch(zone)]
        if not zones:
            raise self.error(f"no intel-rapl zones under {base}")
        names = self.read_lines([f"{base}/{zone}/name" for zone in zones])
        known = sorted(set(names))
        wanted = self.settings.domains
        if wanted:
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                raise ConfigError(f"device {device.name!r}: energy.domains: {unknown} not among RAPL zones {known}")
            chosen = [(zone, name) for zone, name in zip(zones, names) if name in wanted]
        else:
            chosen = [(zone, name) for zone, name in zip(zones, names) if name.startswith("package-")]
            if not chosen:
                raise self.error(f"no package-N zone under {base}; set energy.domains from {known}")
        self.channels = {f"{zone} ({name})": f"{base}/{zone}" for zone, name in chosen}
        ranges = self.read_numbers([f"{path}/max_energy_range_uj" for path in self.channels.values()])
        self.wrap_uj = dict(zip(self.channels, ranges))

    def read(self) -> dict[str, float]:
        values = self.read_numbers([f"{path}/energy_uj" for path in self.channels.values()])
        return dict(zip(self.channels, values))


@hookimpl
def register_energy_probes(register):
    register(RaplProbe)
