"""none: the device has no energy meter; records keep empty energy columns and say why."""

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.energy import NONE, EnergyProbe, ProbeSettings


class NoProbeSettings(ProbeSettings):
    reason: str = Field("no energy probe is configured for this device", description="why there are no energy numbers")


class NoEnergyProbe(EnergyProbe):
    name = "none"
    kind = NONE
    Settings = NoProbeSettings

    @property
    def reason(self) -> str:
        return self.settings.reason

    def read(self) -> dict[str, float]:
        raise self.error(f"nothing to read: {self.reason}")


@hookimpl
def register_energy_probes(register):
    register(NoEnergyProbe)
