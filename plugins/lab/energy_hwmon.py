"""hwmon: a power-monitor chip under /sys/class/hwmon (INA219, INA226, INA3221, ...).

``energy.chip`` is the chip's ``name`` file; ``energy.channels`` the channel
numbers (default: all). The best signal the chip offers is used: an energy
counter ``energyN_input`` (µJ), else power ``powerN_input`` (µW), else bus
voltage × current ``inN_input`` (mV) × ``currN_input`` (mA), which is µW.
"""

import math
import re

from pydantic import Field

from slimlab import hookimpl
from slimlab.lab.energy import COUNTER, POWER, SysfsProbe, SysfsSettings

# Best first: the probe's kind, and the files whose values make one channel's µJ or µW.
SIGNALS = ((COUNTER, ("energy",)), (POWER, ("power",)), (POWER, ("in", "curr")))


def _numbers(listing: list[str], stem: str) -> set[int]:
    pattern = re.compile(rf"{stem}(\d+)_input")
    return {int(m.group(1)) for m in map(pattern.fullmatch, listing) if m}


class HwmonSettings(SysfsSettings):
    chip: str = Field(min_length=1, description="the chip's name file, e.g. ina3221")
    channels: list[int] | None = Field(None, min_length=1, description="channel numbers; default all")


class HwmonProbe(SysfsProbe):
    name, folder = "hwmon", "sys/class/hwmon"
    Settings = HwmonSettings

    def discover(self):
        chips = self.list_dir(self.base)
        names = self.read_lines([f"{self.base}/{chip}/name" for chip in chips]) if chips else []
        (wanted,) = self.among([self.settings.chip], names, "chip")
        matching = [f"{self.base}/{chip}" for chip, name in zip(chips, names) if name == wanted]
        self.kind, self.files = self._choose_files(matching)

    def _choose_files(self, chip_dirs: list[str]) -> tuple[str, dict[str, list[str]]]:
        listings = {path: self.list_dir(path) for path in chip_dirs}
        wanted = set(self.settings.channels or ())
        for kind, stems in SIGNALS:
            files = {}
            for path, listing in listings.items():
                numbers = set.intersection(*(_numbers(listing, stem) for stem in stems))
                for number in sorted(numbers & wanted if wanted else numbers):
                    chip = path.rsplit("/", 1)[1]
                    files[f"{chip}/{stems[0]}{number}"] = [f"{path}/{stem}{number}_input" for stem in stems]
            if files:
                return kind, files
        raise self.error(f"no energy*_input, power*_input or in*/curr*_input pair for channels "
                         f"{sorted(wanted) or 'any'} in {', '.join(chip_dirs)}")

    def read(self) -> dict[str, float]:
        values = iter(self.read_numbers([path for group in self.files.values() for path in group]))
        # One file is µJ or µW already; a pair is mV × mA = µW.
        return {channel: math.prod(next(values) for _ in group) for channel, group in self.files.items()}


@hookimpl
def register_energy_probes(register):
    register(HwmonProbe)
