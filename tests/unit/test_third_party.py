"""A third-party package adds one of every kind of plugin, and the workflow runs them end to end.

The package (tests/data/slimlab_toy) is installed as a real distribution with ``slimlab``
entry points, one per module. It brings a data set with params, an architecture, a task, a format
with its converter, runtime options and its own device adapter, a stage, a transport that
runs on this host without being named ``local``, a runner and an energy probe, each with
its own settings. It imports nothing of slimlab but ``slimlab.api``, and each of its modules
is printed whole in the README. Nothing under slimlab/ or workflow/schemas/ names any of them.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support import REPO, slimlab

TOY = REPO / "tests/data/slimlab_toy"
MODULES = sorted(path.stem for path in TOY.glob("*.py") if path.stem != "__init__")
PLUGINS = [name for name in MODULES if name != "npmlp_device"]  # the adapter runs on devices, not a plugin


def readme_plugin_blocks() -> list[str]:
    """The python blocks of the README's "Writing plugins" section."""
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## Writing plugins\n(.*?)(?=^## )", readme, re.S | re.M).group(1)
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_package_imports_nothing_of_slimlab_but_the_public_module():
    for path in TOY.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            wrong = [name for name in names if name.split(".")[0] == "slimlab" and name != "slimlab.api"]
            assert not wrong, f"{path.name} imports {wrong}: a plugin imports only slimlab.api"


def test_the_readme_prints_every_module_of_the_package_whole():
    blocks = readme_plugin_blocks()
    for name in MODULES:
        assert (TOY / f"{name}.py").read_text() in blocks, f"README's Writing plugins section lacks {name}.py"


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """The package on a PYTHONPATH, and a checkout-like folder whose config uses only its plugins."""
    root = tmp_path_factory.mktemp("third-party")
    site = root / "site"
    shutil.copytree(TOY, site / "slimlab_toy", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "slimlab_toy-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slimlab-toy\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[slimlab]\n" + "".join(f"toy_{name} = slimlab_toy.{name}\n"
                                                                    for name in PLUGINS))
    work = root / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "profiles"):
        (work / name).symlink_to(REPO / name)
    (root / "power").mkdir()
    (root / "power" / "power_uw").write_text("2500000\n")  # 2.5 W, as a sysfs power file says it
    inventory = {"devices": {"here": {"transport": "local", "runner": "python", "runtimes": ["npmlp"],
                                      "workdir": str(root / "here")}, "toybox": {
        "transport": "box", "runner": "quick", "runtimes": ["npmlp"],
        "box": {"root": str(root / "box")},
        "min_seconds": 0.3,  # long enough for several power samples
        "energy": {"probe": "powerfile", "root": str(root / "power"), "file": "power_uw", "interval_s": 0.01,
                   "settle_s": 0.0},
    }}}
    (work / "devices.yaml").write_text(yaml.safe_dump(inventory))
    config = {
        "dataset": {"name": "blobs", "params": {"samples": 240}},
        "task": {"name": "top2"},
        "model": "tiny_mlp",
        "recipes": {"mlp": [{"train": {"epochs": 30, "batch_size": 16}}, {"prune.threshold": {"threshold": 0.05}}]},
        "formats": ["npmlp"],
        "lab": {"inventory": "devices.yaml", "devices": ["here", "toybox"]},
        "bench": {"threads": [1], "warmup": 1, "runs": 5, "min_seconds": 0.05,
                  "option_sets": {"default": {}, "f64": {"npmlp": {"dtype": "float64"}}}},
    }
    (work / "config").mkdir()
    (work / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"PYTHONPATH": str(site), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return {"work": work, "env": env, "config": config}


def test_every_kind_is_registered_from_the_package(toy):
    done = slimlab("plugins", env=toy["env"])
    assert done.returncode == 0, done.stderr
    listed = {row["name"]: row for row in json.loads(done.stdout) if row["name"].startswith("toy_")}
    assert sorted(listed) == [f"toy_{name}" for name in PLUGINS]
    assert {row["version"] for row in listed.values()} == {"0.3.0"}
    assert len({hook for row in listed.values() for hook in row["hooks"]}) == 8
    formats = json.loads(slimlab("formats", env=toy["env"]).stdout)
    assert formats["npmlp"]["runtime_options"]["dtype"]["enum"] == ["float32", "float64"]


def test_the_config_schema_and_inventory_take_the_plugins_own_keys(toy, tmp_path):
    ok = slimlab("validate", str(toy["work"] / "config/config.yaml"), cwd=toy["work"], env=toy["env"])
    assert ok.returncode == 0, ok.stderr
    bad = {**toy["config"], "bench": {**toy["config"]["bench"],
                                      "option_sets": {"default": {}, "half": {"npmlp": {"dtype": "float16"}}}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    refused = slimlab("validate", str(tmp_path / "bad.yaml"), cwd=toy["work"], env=toy["env"])
    assert refused.returncode == 2
    assert "bench.option_sets.half.npmlp.dtype: 'float16' is not one of ['float32', 'float64']" in refused.stderr
    inventory = yaml.safe_load((toy["work"] / "devices.yaml").read_text())
    inventory["devices"]["toybox"]["energy"]["wattage"] = 3
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    bad_device = {**toy["config"], "lab": {"inventory": str(tmp_path / "inventory.yaml"), "devices": ["toybox"]}}
    (tmp_path / "bad-device.yaml").write_text(yaml.safe_dump(bad_device))
    refused = slimlab("validate", str(tmp_path / "bad-device.yaml"), cwd=toy["work"], env=toy["env"])
    assert refused.returncode == 2
    assert "devices.toybox.energy: wattage: Extra inputs are not permitted" in refused.stderr


@pytest.mark.slow
def test_the_workflow_runs_them_end_to_end(toy):
    run = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci"]
    env = {**os.environ, **toy["env"]}
    planned = subprocess.run([*run, "-n", "--cores", "2"], cwd=toy["work"], env=env, capture_output=True, text=True)
    # The box runs on this host: its bench jobs hold every core, as the built-in local transport's do.
    jobs = re.findall(r"rule (bench_device_\w+):\n(.*?)\n\n", planned.stdout, re.S)
    assert jobs and all("threads: 2" in block for _, block in jobs), planned.stdout[-3000:]
    done = subprocess.run(run, cwd=toy["work"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = pd.read_csv(toy["work"] / "results/report/summary.csv")
    assert (summary["format"] == "npmlp").all() and (summary["status"] == "ok").all()
    # The built-in python runner and local transport run the new format's adapter on this host too.
    here = summary[summary["device"] == "here"].set_index("option_set")
    assert json.loads(here.loc["f64", "options"]) == {"dtype": "float64"} and (here["latency_median_ms"] > 0).all()
    table = summary[summary["device"] == "toybox"].set_index("option_set")
    assert set(table.index) == {"default", "f64"}
    assert table.loc["f64", "options_honoured"] == "dtype"
    assert json.loads(table.loc["f64", "options"]) == {"dtype": "float64"}
    assert table["steps"].iloc[0] == ("train(batch_size=16, epochs=30, model=tiny_mlp) → prune.threshold(threshold=0.05)"
                                      " → convert.npmlp")
    # The meter reads a steady 2.5 W, busy or idle: net of the idle baseline, inference costs nothing.
    assert (table["avg_power_w"].round(6) == 2.5).all() and (table["energy_j_per_inference"].abs() < 1e-12).all()
    # The host's scores and parity come from the package's own adapter (the format does not override predict), and
    # its task scores them; the adapter's one output is matched to the Keras model's by size.
    assert not table["parity_failed"].any() and (table["task"] == "top2").all() and (table["test_top2"] > 0.8).all()
    assert table["accuracy"].isna().all() and (table["fidelity_snr_db"] > 20).all()
    # A record keeps the settings the runner ran with: the quick runner's warm-up of 0, not the config's.
    warmups = {device: {json.loads(path.read_text())["settings"]["warmup"]
                        for path in (toy["work"] / "results/bench" / device).rglob("threads-1.json")}
               for device in ("here", "toybox")}
    assert warmups["toybox"] == {0} and min(warmups["here"]) > 0
