"""A quality budget closes the loop: fine-tuning goes on until validation is back within it, and a model that
still misses it is ``budget_missed`` in the report and named at the end of the run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow

TRAIN = {"train": {"epochs": 20, "learning_rate": 0.01, "model_params": {"width": 8, "dense": 16}}}
RECIPES = {
    "baseline": [TRAIN],
    # A mild cut that a generous budget takes at once: no epoch beyond the step's own.
    "mild": [TRAIN, {"prune.magnitude": {"sparsity": 0.3, "epochs": 1}}],
    # A deep cut that one epoch leaves outside the budget, and a few more bring back.
    "recovering": [TRAIN, {"prune.magnitude": {"sparsity": 0.75, "schedule": "constant", "epochs": 1,
                                                "learning_rate": 0.005}}],
    # Nearly every weight gone, and not one point of accuracy may be lost.
    "impossible": [TRAIN, {"prune.magnitude": {"sparsity": 0.98, "schedule": "constant", "epochs": 1}}],
}
BUDGET = {"max_drop": 0.5, "max_epochs": 6, "patience": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("budget")
    for name in ("Snakefile", "workflow", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps({  # no YAML aliases
        "dataset": {"name": "digits"},
        "budget": BUDGET,
        "recipe_budgets": {"baseline": None, "impossible": {**BUDGET, "max_drop": 0.0, "max_epochs": 3},
                           "recovering": {**BUDGET, "max_drop": 0.05, "max_epochs": 15}},
        "recipes": RECIPES,
        "formats": ["tflite"],
        "lab": {"inventory": "devices/lab.yaml", "devices": []},
    }))))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


def history(root: Path, sparsity: float) -> dict:
    """The fine-tuning history of the prune.magnitude step at ``sparsity``."""
    found = [json.loads(path.read_text()) for path in root.glob("results/artifacts/**/prune.magnitude@*/artifact.json")]
    (info,) = [info for info in found if info["lineage"][-1]["params"]["sparsity"] == sparsity]
    return info["metrics"]["history"]


def test_a_budget_that_can_be_met_stops_at_the_steps_own_epochs(run):
    root, _ = run
    found = history(root, 0.3)["budget"]
    assert found["stopped"] == "within budget" and found["epochs"] == 1 < BUDGET["max_epochs"]
    assert found["metric"] == "accuracy" and found["best"] >= found["target"]


def test_fine_tuning_goes_on_until_the_budget_is_met_and_stops_there(run):
    root, done = run
    found = history(root, 0.75)["budget"]
    assert found["val_scores"][0] < found["target"] <= found["best"] == pytest.approx(found["val_scores"][-1], abs=1e-5)
    assert found["stopped"] == "within budget" and 1 < found["epochs"] < 15
    assert "budget missed: recovering" not in done.stderr


def test_an_impossible_budget_fine_tunes_to_its_limit_then_is_budget_missed(run):
    root, done = run
    found = history(root, 0.98)["budget"]
    assert found["stopped"] in ("max_epochs", "no gain in 2 epochs") and 1 < found["epochs"] <= 3
    assert len(found["val_scores"]) == found["epochs"]  # the step's own epoch, then one score per extra epoch
    table = pd.read_parquet(root / "results/report/summary.parquet").set_index("recipe")
    assert table.loc["impossible", "status"] == "budget_missed"
    assert table.loc["impossible", "budget_drop"] > 0 == table.loc["impossible", "budget_max_drop"]
    assert "a drop of" in table.loc["impossible", "error"]
    assert table.loc["mild", "status"] == "ok" and table.loc["mild", "budget_drop"] <= 0.5
    assert pd.isna(table.loc["baseline", "budget_metric"])  # recipe_budgets: null
    # The run's last lines name it, and only it.
    assert "budget missed: impossible (tflite): accuracy" in done.stderr
    assert "budget missed: mild" not in done.stderr


def test_the_budget_is_part_of_a_fine_tuning_steps_identity_only(run):
    root, _ = run
    steps = {p.parent.name for p in root.glob("results/artifacts/**/artifact.json")}
    assert any(name.startswith("prune.magnitude@budget=accuracy-0.5-6e-p2+") for name in steps), steps
    assert any(name.startswith("prune.magnitude@budget=accuracy-0-3e-p2+") for name in steps), steps
    assert "convert.tflite" in steps  # a conversion is the same whatever the budget
