"""Option sets: named runtime settings (the config's ``bench.option_sets``), swept like thread counts.

Each set is layered over the base ``bench.options``, format by format and key by key.
A deployable is timed with ``default`` and with every set that names its format: a set
that changes only ncnn would time a TFLite model exactly as ``default`` does. A set
that a device's runner cannot honour is refused when the config loads.
"""

from slimlab import registry
from slimlab.errors import ConfigError

DEFAULT = "default"


def merged(bench: dict, option_set: str) -> dict:
    """The per-format options ``option_set`` runs with: ``bench.options`` updated by the set's own."""
    base, overrides = bench.get("options", {}), bench["option_sets"][option_set]
    return {kind: {**base.get(kind, {}), **overrides.get(kind, {})} for kind in sorted({*base, *overrides})}


def sets_for(bench: dict, kind: str) -> list[str]:
    """The option sets a ``kind`` model is timed with: ``default`` first, then each set that names ``kind``."""
    return [DEFAULT, *(name for name, options in bench["option_sets"].items() if name != DEFAULT and kind in options)]


def check_honoured(bench: dict, devices) -> None:
    """Every option a device would be asked to apply is one its runner honours; else one ConfigError line."""
    for device in devices:
        runner = registry.runners()[device.runner]
        for option_set in bench["option_sets"]:
            for kind, options in merged(bench, option_set).items():
                if kind not in device.runtimes:
                    continue
                ignored = sorted(set(options) - set(runner.honours(kind)))
                if ignored:
                    where = "bench.options" if option_set == DEFAULT else f"bench.option_sets.{option_set}"
                    raise ConfigError(f"{where}.{kind}: device {device.name!r} runs {kind} with the "
                                      f"{runner.name} runner, which cannot honour {', '.join(ignored)}")
