"""A quality budget: how far a compressed model may fall below its recipe's source model.

The config's ``budget`` applies to every recipe; ``recipe_budgets`` replaces it for the recipes it
names (``null``: none for that recipe). ``metric`` is one of the task's metrics (by default its
headline, e.g. ``accuracy``) or ``cosine``: the least cosine similarity of any output to the source
model's on the same inputs, which needs no labels. ``max_drop`` is in the metric's own units: 0.01
is one point of accuracy.

The budget is used twice:

- **while fine-tuning**, by stages that declare ``fine_tunes`` (they fit with
  :func:`slimlab.kit.training.compile_and_fit`): after the step's own epochs, fine-tuning goes on one
  epoch at a time while the validation score is outside the budget, keeps the best weights, and stops
  at ``max_epochs`` in all or after ``patience`` epochs without gain. The budget is then part of the
  step's identity (its artifact path);
- **in the report**: each deployable's validation score, in its format, against the source model's in
  that same format (the source's own artifact where no recipe converts it). A deployable outside the
  budget is ``budget_missed``: shown with both numbers, never offered as fastest, and named at the end
  of the run. Cosine is measured on the test split, where the source model's outputs are stored.
"""

from dataclasses import dataclass
from typing import Callable

import pydantic

from slimlab import tasks
from slimlab.errors import ConfigError, validated

COSINE = "cosine"


class Budget(pydantic.BaseModel):
    """The ``budget`` block."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    metric: str | None = pydantic.Field(None, description="a metric of the task, or cosine; default: the task's "
                                                          "headline metric (cosine for a task without one)")
    max_drop: float = pydantic.Field(ge=0, description="how far below the source model, in the metric's units")
    max_epochs: int = pydantic.Field(30, ge=1, le=10000, description="fine-tuning may run this many epochs in all")
    patience: int = pydantic.Field(3, ge=1, le=1000, description="stop after this many epochs without gain")


def for_recipe(config: dict, recipe: str) -> dict | None:
    """The recipe's budget, validated, with its metric named; None without one."""
    overrides = config.get("recipe_budgets", {})
    where = f"recipe_budgets.{recipe}" if recipe in overrides else "budget"
    raw = overrides[recipe] if recipe in overrides else config.get("budget")
    if raw is None:
        return None
    budget = validated(Budget, raw, where)
    task, _ = tasks.task(config.get("task"))
    metric = budget.metric or task.headline or COSINE
    if metric != COSINE and metric not in task.better:
        raise ConfigError(f"{where}.metric: {metric!r} is not a metric of task {task.name!r} "
                          f"({', '.join([*sorted(task.better), COSINE])})")
    better = "higher" if metric == COSINE else task.better[metric]
    return {**budget.model_dump(mode="json"), "metric": metric, "better": better}


def segment_value(budget: dict) -> str:
    """The budget as it appears in a fine-tuning step's path segment, e.g. ``accuracy-0.01-30e-p3``."""
    return f"{budget['metric']}-{budget['max_drop']:g}-{budget['max_epochs']}e-p{budget['patience']}"


def drop(higher_is_better: bool, source: float, value: float) -> float:
    """How much worse ``value`` is than ``source`` (negative: better)."""
    return source - value if higher_is_better else value - source


def score(info, metric: str) -> float | None:
    """An artifact's score on ``metric`` (validation split; cosine: test), from its sidecar; None if unmeasured."""
    if metric == COSINE:
        if info.fidelity is None:  # the source model itself
            return 1.0
        return min(found["cosine"] for found in info.fidelity["outputs"].values())
    return (info.quality or {}).get("val", {}).get(metric)


@dataclass
class FitBudget:
    """What fine-tuning needs to keep a budget: ``score(model)`` gives the model's validation score on the budget's
    metric, which must reach ``target`` (the source model's score minus ``max_drop``)."""

    budget: dict
    higher_is_better: bool
    source: float
    score: Callable

    @property
    def target(self) -> float:
        return self.source - self.budget["max_drop"] if self.higher_is_better else self.source + self.budget["max_drop"]

    def within(self, value: float) -> bool:
        return drop(self.higher_is_better, self.source, value) <= self.budget["max_drop"]

    def improves(self, value: float, best: float) -> bool:
        return value > best if self.higher_is_better else value < best

    def fit(self, model, epochs_done: int, fit_epoch: Callable[[int], None]) -> dict:
        """After the step's own ``epochs_done``: ``fit_epoch(epoch)`` while outside the budget; the best weights
        stay. Returns what happened, for the sidecar."""
        best = self.score(model)
        found, best_weights, epoch, since_gain = [best], None, epochs_done, 0
        while not self.within(best) and epoch < self.budget["max_epochs"] and since_gain < self.budget["patience"]:
            best_weights = model.get_weights() if best_weights is None else best_weights
            fit_epoch(epoch)
            epoch += 1
            found.append(self.score(model))
            if self.improves(found[-1], best):
                best, best_weights, since_gain = found[-1], model.get_weights(), 0
            else:
                since_gain += 1
        if best_weights is not None:
            model.set_weights(best_weights)
        if self.within(best):
            stopped = "within budget"
        elif epoch >= self.budget["max_epochs"]:
            stopped = "max_epochs"
        else:
            stopped = f"no gain in {self.budget['patience']} epochs"
        return {"metric": self.budget["metric"], "source": self.source, "target": round(self.target, 6),
                "val_scores": [round(value, 5) for value in found], "epochs": epoch, "best": best, "stopped": stopped}


def for_step(budget: dict, source, splits, task) -> FitBudget:
    """The fine-tuning side of ``budget`` for a step of a recipe whose source model is ``source`` (an
    :class:`slimlab.artifacts.Artifact`): scores on the validation split, outputs matched to the source's."""
    import numpy as np

    from slimlab import formats
    from slimlab.artifacts import task_metrics
    from slimlab_payload.evaluate import align, fidelities, match

    metric = budget["metric"]
    reference = source.format.predict(source.model, splits.x_val)
    keras = formats.get("keras")

    def outputs(model) -> dict:
        found = keras.predict(model, splits.x_val)
        return align(np, reference, found, match(np, reference, found))

    if metric == COSINE:
        return FitBudget(budget, True, 1.0, lambda model: min(
            found["cosine"] for found in fidelities(np, reference, outputs(model)).values()))
    if not splits.labelled:
        raise ConfigError(f"budget.metric: {metric!r} needs labels, and this data has none; use {COSINE}")
    return FitBudget(budget, budget["better"] == "higher",
                     task_metrics(task, reference, splits.y_val)[metric],
                     lambda model: task_metrics(task, outputs(model), splits.y_val)[metric])


def verdict(budget: dict, info, source) -> dict:
    """The report's budget columns for an artifact (``info``, a sidecar) against its source's (``source``);
    ``missed``: outside the budget, or not measured on its metric."""
    found, reference = score(info, budget["metric"]), score(source, budget["metric"])
    lost = None if None in (found, reference) else drop(budget["better"] == "higher", reference, found)
    missed = lost is None or lost > budget["max_drop"]
    if lost is None:
        why = f"{budget['metric']} was not measured on this model or its source"
    else:
        why = (f"{budget['metric']} {found:.4g} against the source's {reference:.4g}: a drop of {lost:.4g}, over "
               f"the budget's {budget['max_drop']:g}")
    return {"budget_metric": budget["metric"], "budget_source": reference, "budget_value": found, "budget_drop": lost,
            "budget_max_drop": budget["max_drop"], "missed": missed, **({"error": why} if missed else {})}
