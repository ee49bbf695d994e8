"""Recipes -> a plan of artifact paths.

Each step's path segment encodes its stage and the params that differ from
the stage's defaults, under the path of the step before it. Recipes with a
common prefix therefore name the same files, and Snakemake builds them once;
changing one param renames only that step and what follows it.
"""

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

from pydantic_core import to_jsonable_python

from slimlab import budget, data, identity, registry, tasks
from slimlab.errors import ConfigError, PluginError

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._=,@+-]{1,96}$")


@dataclass(frozen=True)
class Deployable:
    recipe: str
    format: str
    artifact: str | None  # path under results/artifacts; None when no converter takes the recipe's output
    unsupported: str | None = None
    budget: dict | None = None  # the recipe's quality budget (slimlab.budget)
    source: str | None = None  # with a budget: the recipe's source model in this format (else the source itself)


@dataclass
class Plan:
    steps: dict[str, dict] = field(default_factory=dict)  # artifact path -> step payload
    recipes: dict[str, list[str]] = field(default_factory=dict)
    deployables: list[Deployable] = field(default_factory=list)
    traits: dict[str, frozenset] = field(default_factory=dict)  # artifact path -> what its model is (Stage.traits)

    def step(self, artifact: str) -> dict:
        try:
            return self.steps[artifact]
        except KeyError:
            raise ConfigError(f"no recipe step produces results/artifacts/{artifact}") from None


def _format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def segment(name: str, changed: dict) -> str:
    """``stage`` or ``stage@k=v+...``; a hash stands in when values are long or path-unsafe."""
    if not changed:
        return name
    # "+" between params, not ",": Snakemake's cluster executors split a job's wildcards at commas.
    text = f"{name}@" + "+".join(f"{k}={_format_value(v)}" for k, v in sorted(changed.items()))
    if _SAFE_SEGMENT.match(text):
        return text
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:12]
    return f"{name}@{digest}"


def dataset_segment(dataset: dict) -> str:
    """``mnist@seed=42+test=0.2+val=0.1``: a different split or data never reuses another's artifacts."""
    return segment(dataset["name"], {
        "seed": dataset["seed"], "val": dataset["val_fraction"], "test": dataset["test_fraction"],
        **({"calibration": dataset["calibration_fraction"]} if dataset.get("calibration_fraction") else {}),
        **dataset.get("params", {}),
    })


def dataset_spec(config: dict) -> dict:
    """The config's ``dataset`` block, its params validated, with the identity of the data set's code and content,
    and the config's task (it decides how labels are read and what every artifact is scored by)."""
    found, params = data.dataset(config["dataset"])
    task, task_params = tasks.task(config.get("task"))
    spec = {**config["dataset"], "params": params.model_dump(mode="json"), "code": identity.fingerprint(found.load),
            "task": {"name": task.name, "params": task_params.model_dump(mode="json"),
                     "code": identity.fingerprint(type(task))}}
    if found.digest is not None:
        spec["content"] = found.digest(params)
    return spec


def parse_step(raw, where: str) -> tuple[str, dict]:
    """A step is ``"stage"`` or ``{"stage": {params}}``."""
    if isinstance(raw, str):
        return raw, {}
    if isinstance(raw, dict) and len(raw) == 1:
        (name, params), = raw.items()
        if params is None or isinstance(params, dict):
            return name, dict(params or {})
    raise ConfigError(f"{where}: a step is a stage name or a one-key mapping 'stage: {{params}}', got {raw!r}")


def resolve_params(name: str, params: dict, config: dict) -> dict:
    merged = dict(config.get("stage_defaults", {}).get(name, {}))
    if name == "train" and "model" in config:
        merged.setdefault("model", config["model"])
    merged.update(params)
    return merged


def build_plan(config: dict) -> Plan:
    """Validate every recipe against the registered stages and lay out its artifact paths."""
    stages = registry.stages()
    try:
        for name in config.get("stage_defaults", {}):
            registry.lookup(stages, name, "stage")
    except PluginError as exc:
        raise ConfigError(f"stage_defaults.{name}: {exc}") from None
    try:
        for fmt in config["formats"]:
            registry.lookup(registry.formats(), fmt, "format")
    except PluginError as exc:
        raise ConfigError(f"formats: {exc}") from None
    unknown = sorted(set(config.get("recipe_budgets", {})) - set(config["recipes"]))
    if unknown:
        raise ConfigError(f"recipe_budgets: no recipe {unknown[0]!r}; the recipes are {', '.join(config['recipes'])}")
    plan = Plan()
    dataset = dataset_spec(config)
    for recipe, raw_steps in config["recipes"].items():
        path, kind, paths = dataset_segment(config["dataset"]), None, []
        limit = budget.for_recipe(config, recipe)
        for index, raw in enumerate(raw_steps):
            where = f"recipes.{recipe}[{index}]"
            name, params = parse_step(raw, where)
            try:
                stage = registry.lookup(stages, name, "stage")
            except PluginError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if index == 0 and not stage.is_source:
                raise ConfigError(f"{where}: a recipe starts with a source stage such as 'train', not {name!r}")
            if index > 0 and kind not in stage.inputs:
                takes = ", ".join(stage.inputs) or "nothing (it starts a recipe)"
                raise ConfigError(f"{where}: stage {name!r} takes {takes}; the step before it produces {kind}")
            path = _add_step(plan, path, stage, params, config, dataset, where, limit if stage.fine_tunes else None)
            kind = plan.steps[path]["output"]
            paths.append(path)
        plan.recipes[recipe] = paths
        for fmt in config["formats"]:
            found = _deployable(plan, recipe, path, kind, fmt, config, dataset, stages)
            if limit is not None:
                origin = _deployable(plan, recipe, paths[0], plan.steps[paths[0]]["output"], fmt, config, dataset,
                                     stages)
                found = dataclasses.replace(found, budget=limit, source=origin.artifact or paths[0])
            plan.deployables.append(found)
    return plan


def _deployable(plan: Plan, recipe: str, path: str, kind: str, fmt: str, config: dict, dataset: dict,
                stages: dict) -> Deployable:
    """The recipe's artifact in ``fmt``: itself, or a ``convert.<fmt>`` step appended to it."""
    if kind == fmt:
        return Deployable(recipe, fmt, path)
    stage = stages.get(f"convert.{fmt}")
    if stage is None:
        raise ConfigError(f"formats: no stage converts to {fmt!r} (there is no 'convert.{fmt}' stage)")
    if kind not in stage.inputs:
        # Not every model converts to every format: the report says so, with the format's reason if it gives one.
        reason = registry.formats()[fmt].refuses.get(kind)
        why = f": {reason}" if reason else ""
        return Deployable(recipe, fmt, None, f"convert.{fmt} does not take a {kind} model{why}")
    refused = [stage.refuses_traits[trait] for trait in sorted(plan.traits[path]) if trait in stage.refuses_traits]
    if refused:
        return Deployable(recipe, fmt, None, f"{stage.name}: {refused[0]}")
    return Deployable(recipe, fmt, _add_step(plan, path, stage, {}, config, dataset, f"stage_defaults.{stage.name}"))


def _add_step(plan: Plan, parent: str, stage, params: dict, config: dict, dataset: dict, where: str,
              limit: dict | None = None) -> str:
    validated = stage.validate(resolve_params(stage.name, params, config), where)
    resolved = validated.model_dump(mode="json")
    defaults = {
        name: to_jsonable_python(field.get_default(call_default_factory=True))
        for name, field in stage.params.model_fields.items()
        if not field.is_required()
    }
    changed = {k: v for k, v in resolved.items() if k not in defaults or defaults[k] != v}
    named = {**changed, "budget": budget.segment_value(limit)} if limit else changed
    path = f"{parent}/{segment(stage.name, named)}"
    plan.traits[path] = frozenset(stage.traits(validated))
    plan.steps[path] = {"stage": stage.name, "params": resolved, "changed": changed, "dataset": dataset,
                        "output": stage.output_for(validated),
                        "code": identity.fingerprint(stage.run, *stage.uses(validated)),
                        **({"budget": limit} if limit else {})}
    if stage.reads is not None:
        try:
            plan.steps[path]["content"] = stage.reads(validated)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return path
