"""Stage plugins: what a stage declares, and how the host runs one step of a recipe."""

import dataclasses
import time
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, Callable

import pydantic

from slimlab import artifacts, budget, data, job, registry, tasks
from slimlab.errors import ConfigError, Unsupported, validated
from slimlab.records import Sidecar, Step


class StageParams(pydantic.BaseModel):
    """Base for a stage's params: typed, with defaults; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(StageParams):
    pass


@dataclass
class StageContext:
    """What a stage may use besides its input.

    ``splits``: the data set's fixed train/val/test split (:class:`slimlab.data.Splits`: ``x_train``, ``y_train``,
    ``x_val``, ``y_val``, ``x_test``, ``y_test``, ``num_classes``, ``input_shape``; the ``y_*`` are None for
    unlabelled data); ``task``: the config's task and its params (a (:class:`slimlab.tasks.Task`, params) pair);
    ``seed``: the seed to draw
    anything random from; ``workdir``: the new artifact's folder (extra files may go there, e.g. a CSV the sidecar's
    metrics name); ``record(**numbers)``: adds JSON-serialisable numbers to the new sidecar's ``metrics``;
    ``unchanged(reason)``: says the step left the model as it was (the report notes why).
    """

    splits: data.Splits
    seed: int
    workdir: Path
    task: tuple = (None, None)
    metrics: dict = field(default_factory=dict)

    def record(self, **metrics: Any) -> None:
        """Add stage-specific numbers to the output sidecar's ``metrics``."""
        self.metrics.update(metrics)

    def unchanged(self, reason: str) -> None:
        """Say that this step left the model as it was, and why: the report notes it on every model made from it."""
        self.metrics["unchanged"] = reason


@dataclass(frozen=True)
class Stage:
    """A named recipe step; ``register(Stage(name, run, Params, inputs=..., output=...))``.

    ``run(artifact, params, ctx)`` makes the step's model:

    - ``artifact``: the verified input (``.model`` the model in its format's in-memory form, ``.kind`` its format,
      ``.info`` its sidecar, ``.paths`` its files, ``.lineage`` its steps, ``.test_outputs`` its outputs on the
      test split, by name), or None for a source stage;
    - ``params``: an instance of ``params`` (a :class:`StageParams`), validated when the config loaded;
    - ``ctx``: a :class:`StageContext`;
    - returns the new model in the in-memory form of format ``output`` (a tf_keras model for ``keras``, the
      file's bytes for TFLite/ONNX/MNN, whatever the format's ``save`` takes); the host saves, measures and
      records it. It raises a :class:`slimlab.errors.SlimlabError` for a failure the user can act on (shown as
      its message), anything else for a bug (shown as its type and message); either fails this step alone.

    ``inputs`` lists the formats it accepts; an empty tuple makes it a source
    stage (like ``train``) that starts a recipe. ``output`` is a format name, or
    a function of the params that gives one (``import`` gives the file's format).
    ``uses(params)`` names other registered objects whose code is part of what
    the step builds (``train``: the architecture); ``reads(params)`` hashes the
    files it reads (``import``: the model file). Either changing reruns the step.
    ``check(params, splits, task)``, optional, checks a step against the data and the task before anything runs
    (``slimlab validate``; ``import``: the model's inputs and outputs), raising ConfigError lines.
    ``fine_tunes``: True if ``run`` fits with :func:`slimlab.kit.training.compile_and_fit` on ``ctx.splits``; the
    recipe's quality budget (:mod:`slimlab.budget`) then reaches that fit, which may go on past the step's epochs,
    and is part of the step's identity.
    ``traits(params)`` says what its output is beyond its format (``{"integer"}``: a quantized TFLite model,
    ``{"sparse"}``); a converter's ``refuses_traits`` maps a trait it cannot take to the one-line reason, and the
    plan reports such a pair as unsupported before anything runs.
    """

    name: str
    run: Callable[[Any, StageParams, StageContext], Any]
    params: type[StageParams] = NoParams
    inputs: tuple[str, ...] = ("keras",)
    output: str | Callable[[StageParams], str] = "keras"
    uses: Callable[[StageParams], list] = lambda params: []
    reads: Callable[[StageParams], str] | None = None
    traits: Callable[[StageParams], frozenset] = lambda params: frozenset()
    refuses_traits: dict = field(default_factory=dict)
    check: Callable[[StageParams, data.Splits, tuple], None] | None = None
    fine_tunes: bool = False

    def output_for(self, params: StageParams) -> str:
        return self.output(params) if callable(self.output) else self.output

    @property
    def is_source(self) -> bool:
        return not self.inputs

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip().split("\n")[0]

    def validate(self, params: dict | None, where: str) -> StageParams:
        return validated(self.params, params, f"{where}: invalid params for stage {self.name!r}")


def run_step(step: dict, input_sidecar: Path | None, output_sidecar: Path) -> artifacts.Artifact | Sidecar:
    """Run one recipe step (``{"stage", "params", "changed", "code", "dataset"}``) and write its artifact.

    If the input artifact is a failed (or unsupported) one, nothing runs: the output is too, naming the first
    failure. A stage that raises :class:`slimlab.errors.Unsupported` leaves an ``unsupported`` sidecar.
    """
    stage = registry.lookup(registry.stages(), step["stage"], "stage")
    params = stage.validate(step.get("params"), f"step {step['stage']}")
    output_sidecar = Path(output_sidecar)
    entry = Step(stage=stage.name, params=params.model_dump(mode="json"), changed=step.get("changed", {}),
                 code=step.get("code"), artifact=str(output_sidecar.parent))
    dataset = step["dataset"]
    source, lineage = None, []
    if not stage.is_source:
        parent = artifacts.read_sidecar(input_sidecar)
        lineage = parent.lineage
        if parent.status != "ok":
            message = parent.error if parent.error.startswith(artifacts.SKIPPED) else f"{artifacts.SKIPPED} {parent.error}"
            return artifacts.write_failed(output_sidecar, stage.output_for(params), [*lineage, entry], dataset, message,
                                          status=parent.status)
        source = artifacts.Artifact.load(input_sidecar)
        if source.kind not in stage.inputs:
            raise ConfigError(f"stage {stage.name!r} takes {', '.join(stage.inputs)}, but {input_sidecar} is {source.kind}")
    splits = data.load_spec(dataset)
    task = tasks.task(dataset.get("task"))
    if source is not None and splits.num_classes is None:  # fine-tuning learns the input model's outputs
        splits = dataclasses.replace(splits, targets=cache(partial(source_targets, source, splits)))
    if step.get("budget") and stage.fine_tunes:
        origin = artifacts.Artifact.load(Path(lineage[0].artifact) / artifacts.SIDECAR)
        splits = dataclasses.replace(splits, budget=budget.for_step(step["budget"], origin, splits, task))
    ctx = StageContext(splits=splits, seed=dataset["seed"], workdir=output_sidecar.parent, task=task)
    began = time.time()
    try:
        model = stage.run(source, params, ctx)
    except Unsupported as exc:  # a known limit, not a failure: recorded as such, and the job succeeds
        return artifacts.write_failed(output_sidecar, stage.output_for(params), [*lineage, entry], dataset, str(exc),
                                      status="unsupported")
    timing = {"startup_s": round(began - job.started(), 3), "work_s": round(time.time() - began, 3)}
    return artifacts.write(output_sidecar.parent, stage.output_for(params), model, lineage=[*lineage, entry],
                           dataset=dataset, splits=ctx.splits, metrics=ctx.metrics, timing=timing)


def source_targets(source: artifacts.Artifact, splits: data.Splits) -> dict:
    """The input model's outputs on the train and val splits, by name: what a step without class labels fine-tunes
    its model to reproduce."""
    return {split: source.format.predict(source.model, x) for split, x in (("train", splits.x_train),
                                                                            ("val", splits.x_val))}


def mark_failed(step: dict, input_sidecar: Path | None, output_sidecar: Path, error: str) -> Sidecar:
    """Record that ``step`` failed with ``error``: the report shows it and the steps below it are skipped."""
    stage = registry.lookup(registry.stages(), step["stage"], "stage")
    lineage = artifacts.read_sidecar(input_sidecar).lineage if input_sidecar else []
    entry = Step(stage=stage.name, params=step.get("params", {}), changed=step.get("changed", {}),
                 code=step.get("code"), artifact=str(Path(output_sidecar).parent))
    # The plan's own record of the output format: validating the params again could fail on what broke the step.
    kind = step.get("output") or stage.output_for(stage.validate(step.get("params"), f"step {stage.name}"))
    return artifacts.write_failed(Path(output_sidecar), kind, [*lineage, entry], step["dataset"], error)
