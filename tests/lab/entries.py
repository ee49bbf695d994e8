"""Device entries and bench blocks for lab tests, checked as the inventory and the config check them."""

import copy

from slimlab import config
from slimlab.lab.devices import Device, device
from slimlab.option_sets import DEFAULT


def lab_device(name: str, entry: dict) -> Device:
    """A typed device from an inventory entry: the schema's defaults filled in, every plugin block checked."""
    entry = copy.deepcopy(entry)
    config.validate({"devices": {name: entry}}, "devices.schema.yaml", "test inventory")
    return device(name, entry, "test inventory")


def bench_block(*, warmup: int, runs: int, min_seconds: float, timeout_s: float, options: dict | None = None,
                option_set: str = DEFAULT, max_samples: int = 100_000, noisy_cv: float = 0.1) -> dict:
    """The config's ``bench`` block for one option set, as the workflow hands it to ``slimlab bench``."""
    return {"threads": [1], "warmup": warmup, "runs": runs, "min_seconds": min_seconds, "max_samples": max_samples,
            "timeout_s": timeout_s, "noisy_cv": noisy_cv, "options": options or {}, "option_set": option_set}
