"""The device inventory: the keys every device has, and the blocks its plugins own.

The inventory schema (``devices.schema.yaml``) checks the common keys. Every other
key of a device is a block named after its transport or its runner (``ssh:``,
``adb:``, ``python:``, ``native:``); the ``energy`` block's ``probe`` names a
probe. Each block is handed to that plugin's pydantic ``Settings`` model, so a
third-party transport, runner or probe brings its own keys and checks, and an
error names the device, the block and the key in one line.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pydantic

from slimlab import config, registry
from slimlab.errors import ConfigError, PluginError, validated
from slimlab.records import MEASUREMENT_KEYS, Emulation

COMMON_KEYS = {"transport", "runner", "runtimes", "workdir", "energy", "emulated", *MEASUREMENT_KEYS}


class Settings(pydantic.BaseModel):
    """Base of a lab plugin's settings (its inventory block): a frozen pydantic model; unknown keys are errors,
    values are checked when the inventory loads, and each problem is one line naming the device and key."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Device:
    """One inventory entry, validated: common keys, and each plugin's settings."""

    name: str
    transport: str
    runner: str
    runtimes: tuple[str, ...]
    workdir: str | None
    transport_settings: Settings
    runner_settings: Settings
    probe: str = "none"
    energy: Settings = field(default_factory=Settings)
    measurement: dict = field(default_factory=dict)  # overrides of the config's `bench` block
    emulated: Emulation | None = None  # an emulator (e.g. qemu-user): its latencies are not a device's

    @property
    def resource(self) -> str:
        """The Snakemake resource that lets one benchmark at a time run on this device."""
        return resource_name(self.name)


def resource_name(device: str) -> str:
    return "device_" + re.sub(r"\W", "_", device)


def _plugin(table: dict, name: str, what: str, where: str):
    try:
        return registry.lookup(table, name, what)
    except PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def device(name: str, entry: dict, source: str = "inventory") -> Device:
    """Validate one device entry (already checked against the schema's common keys)."""
    where = f"{source}: devices.{name}"
    transport = _plugin(registry.transports(), entry["transport"], "transport", f"{where}.transport")
    runner = _plugin(registry.runners(), entry["runner"], "runner", f"{where}.runner")
    for key in entry:
        if key not in COMMON_KEYS and key not in (transport.name, runner.name):
            raise ConfigError(f"{where}: unknown key {key!r}; besides the common keys a device takes only a block "
                              f"named after its transport ({transport.name!r}) or runner ({runner.name!r})")
    for fmt in entry.get("runtimes", ["tflite"]):
        _plugin(registry.formats(), fmt, "format", f"{where}.runtimes")
    energy = dict(entry.get("energy") or {"probe": "none"})
    probe = _plugin(registry.energy_probes(), energy.pop("probe"), "energy probe", f"{where}.energy.probe")
    return Device(
        name=name,
        transport=transport.name,
        runner=runner.name,
        runtimes=tuple(entry.get("runtimes", ["tflite"])),
        workdir=entry.get("workdir"),
        transport_settings=validated(transport.Settings, entry.get(transport.name), f"{where}.{transport.name}"),
        runner_settings=validated(runner.Settings, entry.get(runner.name), f"{where}.{runner.name}"),
        probe=probe.name,
        energy=validated(probe.Settings, energy, f"{where}.energy"),
        measurement={key: entry[key] for key in MEASUREMENT_KEYS if key in entry},
        emulated=emulation(entry.get("emulated", False), f"{where}.emulated"),
    )


def emulation(declared: bool | dict, where: str) -> Emulation | None:
    """``emulated: true`` or ``emulated: {qemu_cpu: ...}`` declares an emulator; false or absent, a device."""
    if declared is False:
        return None
    return validated(Emulation, {} if declared is True else declared, where)


def load_inventory(path: str | Path) -> dict[str, Device]:
    """Device name -> validated :class:`Device`, from one inventory file or every ``*.yaml`` in a folder
    (``slimlab board up`` writes its board's entry to a file of its own there)."""
    path = Path(path)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"{path}: no device inventory (*.yaml) in this folder")
    devices, sources = {}, {}
    for file in files:
        inventory = config.load_mapping(file, "device inventory")
        config.validate(inventory, "devices.schema.yaml", str(file))
        for name, entry in inventory["devices"].items():
            if name in devices:
                raise ConfigError(f"{file}: device {name!r} is also in {sources[name]}")
            devices[name], sources[name] = device(name, entry, str(file)), file
    by_resource: dict[str, str] = {}
    for name, found in devices.items():
        other = by_resource.setdefault(found.resource, name)
        if other != name:
            raise ConfigError(f"{path}: devices {other!r} and {name!r} differ only in punctuation, which Snakemake's "
                              f"resource names drop (both are {found.resource}); rename one")
    return devices
