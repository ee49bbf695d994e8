"""none: the device has no energy meter; records keep empty energy columns and say why."""

from slimlab import hookimpl
from slimlab.lab.energy import NONE, EnergyProbe


class NoEnergyProbe(EnergyProbe):
    name = "none"
    kind = NONE

    @property
    def reason(self) -> str:
        return self.settings.get("reason", "no energy probe is configured for this device")

    def read(self) -> dict[str, float]:
        raise self.error(f"nothing to read: {self.reason}")


@hookimpl
def register_energy_probes(register):
    register(NoEnergyProbe)
