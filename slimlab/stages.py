"""Stage plugins: what a stage declares, and how the host runs one step of a recipe."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pydantic

from slimlab import data, registry
from slimlab import artifacts as artifacts_mod
from slimlab.errors import ConfigError


class StageParams(pydantic.BaseModel):
    """Base for a stage's params: typed, with defaults; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class NoParams(StageParams):
    pass


@dataclass
class StageContext:
    """What a stage may use besides its input: the data splits, a seed and a place for extra metrics."""

    splits: data.Splits
    seed: int
    workdir: Path
    metrics: dict = field(default_factory=dict)

    def record(self, **metrics: Any) -> None:
        """Add stage-specific numbers to the output sidecar's ``metrics``."""
        self.metrics.update(metrics)


@dataclass(frozen=True)
class Stage:
    """A named step. ``run(artifact, params, ctx)`` returns a model of kind ``output``.

    ``inputs`` lists the kinds it accepts; an empty tuple makes it a source
    stage (like ``train``) that starts a recipe.
    """

    name: str
    run: Callable[[Any, StageParams, StageContext], Any]
    params: type[StageParams] = NoParams
    inputs: tuple[str, ...] = ("keras",)
    output: str = "keras"

    @property
    def is_source(self) -> bool:
        return not self.inputs

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip().split("\n")[0]

    def validate(self, params: dict | None, where: str) -> StageParams:
        try:
            return self.params(**(params or {}))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise ConfigError(f"{where}: invalid params for stage {self.name!r}: {problems}") from None


def run_step(step: dict, input_sidecar: Path | None, output_sidecar: Path) -> artifacts_mod.Artifact:
    """Run one recipe step (``{"stage", "params", "dataset", "lineage"}``) and write its artifact."""
    stage = registry.lookup(registry.stages(), step["stage"], "stage")
    params = stage.validate(step.get("params"), f"step {step['stage']}")
    dataset = step["dataset"]
    ctx = StageContext(splits=data.load_spec(dataset), seed=dataset["seed"], workdir=Path(output_sidecar).parent)
    if stage.is_source:
        source, lineage = None, []
    else:
        source = artifacts_mod.Artifact.load(input_sidecar)
        if source.kind not in stage.inputs:
            raise ConfigError(f"stage {stage.name!r} takes {', '.join(stage.inputs)}, but {input_sidecar} is {source.kind}")
        lineage = source.lineage
    model = stage.run(source, params, ctx)
    entry = {"stage": stage.name, "params": params.model_dump(mode="json")}
    return artifacts_mod.write(
        Path(output_sidecar).parent, stage.output, model,
        lineage=[*lineage, entry], dataset=dataset, splits=ctx.splits, extra=ctx.metrics,
    )
