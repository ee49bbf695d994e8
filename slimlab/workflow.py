"""What the Snakemake workflow and ``slimlab validate`` check before anything runs.

One function serves both, so ``slimlab validate CONFIG`` finds every problem that
``snakemake -n`` would: the config schema, the data set and its params, every
recipe and stage param, the inventory and its plugins' blocks, the devices the
run names, and option sets those devices' runners cannot honour. ``validate`` then
loads the data and runs each step's own checks against it (:func:`check_with_data`).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from slimlab import config, data, option_sets, recipes, registry, tasks
from slimlab.errors import ConfigError
from slimlab.lab.devices import Device, load_inventory


@dataclass(frozen=True)
class Experiment:
    plan: recipes.Plan
    devices: dict[str, Device]  # the devices this run uses, by name


def check(cfg: dict, source: str = "config") -> Experiment:
    """Validate a config (filling its defaults in place) and everything it names."""
    config.validate(cfg, "config.schema.yaml", source)
    plan = recipes.build_plan(cfg)
    inventory_path = Path(cfg["lab"]["inventory"])
    inventory = load_inventory(inventory_path)
    missing = [name for name in cfg["lab"]["devices"] if name not in inventory]
    if missing:
        raise ConfigError(f"{source}: lab.devices: {missing[0]!r} is not in {inventory_path} "
                          f"(it has {', '.join(inventory)})")
    devices = {name: inventory[name] for name in cfg["lab"]["devices"]}
    try:
        option_sets.check_honoured(cfg["bench"], devices.values())
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return Experiment(plan, devices)


def check_with_data(cfg: dict, plan: recipes.Plan) -> tuple:
    """What ``slimlab validate`` checks beyond ``snakemake -n``: the data itself (shapes, labels as the task reads
    them, every class in every split), and each step's own checks against it and the task (``import``: the
    model's inputs and outputs). Returns the splits and the (task, params) pair."""
    spec = recipes.dataset_spec(cfg)
    splits, task = data.load_spec(spec), tasks.task(spec["task"])
    for step in plan.steps.values():
        stage = registry.stages()[step["stage"]]
        if stage.check is not None:
            stage.check(stage.validate(step["params"], f"step {stage.name}"), splits, task)
    return splits, task


def check_files(paths: list[str | Path]) -> None:
    """Read config files strictly (duplicate keys, aliases, encoding), as Snakemake's own loader does not."""
    for path in paths:
        config.load_mapping(path, "config")


def strict_configfile(path: str) -> str:
    """``path``, once it reads strictly; else one ``slimlab: error:`` line and exit, before Snakemake's own
    loader prints a traceback for a file that is not UTF-8 or nests too deep."""
    if Path(path).is_file():
        try:
            check_files([path])
        except ConfigError as exc:
            sys.exit(f"slimlab: error: {exc}")
    return path
