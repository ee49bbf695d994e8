"""powerfile: an energy meter that is one sysfs-style file holding the power draw in µW."""

from pydantic import Field

from slimlab.api import POWER, SysfsProbe, SysfsSettings, hookimpl


class MeterSettings(SysfsSettings):
    file: str = Field(min_length=1, description="a file holding the power draw in µW")


class PowerFile(SysfsProbe):
    name = "powerfile"
    kind = POWER  # instantaneous µW, integrated by slimlab; COUNTER for cumulative µJ
    Settings = MeterSettings

    def read(self) -> dict[str, float]:
        (power,) = self.read_numbers([self.path(self.settings.file)])
        return {"board": power}


@hookimpl
def register_energy_probes(register):
    register(PowerFile)
