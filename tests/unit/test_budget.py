"""The quality budget's config, its place in the plan, its verdict, and fine-tuning's loop, on stand-in models."""

import copy

import pandas as pd
import pytest
import yaml

from slimlab import budget, config, recipes, report
from slimlab.errors import ConfigError
from slimlab.records import Sidecar
from tests.support import REPO

DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())


def plan_with(**extra):
    cfg = {**copy.deepcopy(DEFAULT), **extra}
    config.validate(cfg, "config.schema.yaml", "config")
    return recipes.build_plan(cfg)


@pytest.mark.parametrize("extra, message", [
    ({"budget": {"metric": "map50", "max_drop": 0.01}},
     "budget.metric: 'map50' is not a metric of task 'classification' (accuracy, top5, cosine)"),
    ({"budget": {"metric": "accuracy"}}, "budget: max_drop: Field required"),
    ({"budget": {"max_drop": -1}}, "budget: max_drop: Input should be greater than or equal to 0"),
    ({"recipe_budgets": {"nosuch": {"max_drop": 0.01}}}, "recipe_budgets: no recipe 'nosuch'"),
    ({"recipe_budgets": {"baseline": {"max_drop": 0.01, "epochs": 3}}}, "recipe_budgets.baseline: epochs: Extra"),
])
def test_a_bad_budget_is_one_line_naming_its_key(extra, message):
    with pytest.raises(ConfigError) as caught:
        plan_with(**extra)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_budget_joins_only_the_identity_of_steps_that_fine_tune():
    plain, limited = plan_with(), plan_with(budget={"max_drop": 0.01}, recipe_budgets={"baseline": None})
    fine_tuning = ("prune.", "cluster.", "quantize.qat", "lowrank.")
    moved = set(plain.steps) - set(limited.steps)
    assert moved and all(any(stage in path for stage in fine_tuning) for path in moved)
    # Training, post-training quantization and distillation read no budget: their artifacts stay where they were.
    assert {path for path in plain.steps if not any(stage in path for stage in fine_tuning)} <= set(limited.steps)
    judged = {d.recipe: d for d in limited.deployables}
    assert judged["baseline"].budget is None
    source = judged["pruned_int8"].source
    assert judged["pruned_int8"].budget == {"metric": "accuracy", "max_drop": 0.01, "max_epochs": 30, "patience": 3,
                                       "better": "higher"}
    # The source model in the deployable's own format: the baseline's conversion.
    assert source == next(d.artifact for d in limited.deployables
                          if d.recipe == "baseline" and d.format == judged["pruned_int8"].format)


def sidecar(val_accuracy=None, cosine=None):
    return Sidecar(format="tflite", lineage=[], dataset={},
                   quality={"task": "classification", "val": {"accuracy": val_accuracy}} if val_accuracy else None,
                   fidelity={"outputs": {"logits": {"cosine": cosine}}} if cosine else None)


@pytest.mark.parametrize("metric, better, model, source, missed, drop", [
    ("accuracy", "higher", sidecar(0.90), sidecar(0.92), True, 0.02),
    ("accuracy", "higher", sidecar(0.915), sidecar(0.92), False, 0.005),
    ("cosine", "higher", sidecar(cosine=0.995), sidecar(), False, 0.005),
    ("cosine", "higher", sidecar(cosine=0.98), sidecar(), True, 0.02),
    ("accuracy", "higher", sidecar(), sidecar(0.92), True, None),  # not measured: never silently within
])
def test_the_verdict_compares_with_the_source_in_the_metrics_direction(metric, better, model, source, missed, drop):
    found = budget.verdict({"metric": metric, "better": better, "max_drop": 0.01}, model, source)
    assert found["missed"] is missed and found["budget_drop"] == pytest.approx(drop)
    assert ("error" in found) is missed


def test_a_lower_is_better_metric_drops_upwards():
    assert budget.drop(False, source=1.0, value=1.5) == 0.5 and budget.drop(True, source=1.0, value=1.5) == -0.5


class Model:
    """A model whose validation score is read from a script, one value per epoch, and whose weights are its epoch."""

    def __init__(self, scores):
        self.scores, self.epoch = scores, 0

    def get_weights(self):
        return self.epoch

    def set_weights(self, weights):
        self.epoch = weights


def fit_with(scores, **limits):
    model = Model(scores)
    limit = budget.FitBudget({"metric": "accuracy", "max_drop": 0.05, "max_epochs": 10, "patience": 2, **limits},
                             True, 0.9, lambda m: m.scores[m.epoch])
    found = limit.fit(model, 0, lambda epoch: setattr(model, "epoch", epoch + 1))
    return model, found


def test_fine_tuning_stops_as_soon_as_the_budget_is_met():
    model, found = fit_with([0.5, 0.7, 0.86, 0.88, 0.89])
    assert found["stopped"] == "within budget" and found["epochs"] == 2 and model.epoch == 2


def test_without_gain_it_stops_after_patience_and_keeps_the_best_weights():
    model, found = fit_with([0.5, 0.7, 0.6, 0.65, 0.9])
    assert found["stopped"] == "no gain in 2 epochs" and found["epochs"] == 3
    assert model.epoch == 1 and found["best"] == 0.7  # the best epoch's weights, not the last


def test_it_never_runs_past_max_epochs():
    _, found = fit_with([0.1 * i for i in range(12)], max_epochs=4)
    assert found["stopped"] == "max_epochs" and found["epochs"] == 4


def test_a_model_outside_its_budget_is_never_offered_as_fastest():
    row = {"recipe": "int8", "format": "tflite", "device": "board", "option_set": "default", "threads": 1,
           "options": "{}", "latency_median_ms": 1.0, "latency_cv": 0.01, "runtime": "r", "accuracy": 0.5,
           "size_bytes": 10}
    table = pd.DataFrame([{**row, "status": "budget_missed"}, {**row, "recipe": "fp32", "status": "ok"}])
    assert report.fastest(table)["recipe"].tolist() == ["fp32"]
