"""What a model is for: which of its outputs are read, how labels look, and how it is scored.

A task plugin registers a :class:`Task` from ``register_tasks``. The config names one in its
``task`` block (``{name, params}``; ``classification`` when left out); its params are
validated when the config loads, like a stage's. Every artifact is scored with the task's
metrics on the validation and test splits where the data has labels, and, labelled or not,
with its fidelity to the recipe's source model (:mod:`slimlab_payload.evaluate`).

A model's outputs reach a task as a dict, output name -> array with the batch first, in
the order of the model that was imported or trained (converters may rename and reorder
outputs; slimlab matches them back by name, then by order and shape).
"""

from dataclasses import dataclass

import numpy as np
import pydantic

from slimlab import registry
from slimlab.errors import ConfigError, PluginError, validated

DEFAULT = {"name": "classification"}


class TaskParams(pydantic.BaseModel):
    """Base for a task's params: typed, with defaults; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OutputParams(TaskParams):
    """Params of a task that reads one output: which, when the model has several."""

    output: str | None = pydantic.Field(None, description="the output to read; needed when the model has several")


@dataclass(frozen=True)
class OutputSpec:
    """One model output: its name and shape (``None`` for the batch and any free dimension)."""

    name: str
    shape: tuple


class Task:
    """A task; subclass it and ``register(MyTask())`` from ``register_tasks``.

    Class attributes: ``name`` (the config's ``task.name``), ``Params`` (a :class:`TaskParams` model: the schema
    of ``task.params``), ``needs_labels`` (False: the task scores without labels), ``stratify`` (True: labels are
    class indices, and the data is split class by class so that every split has every class), ``better``
    (metric -> ``"higher"`` or ``"lower"``, for every metric ``metrics`` returns) and ``headline`` (the metric a
    budget and the report use unless told another).

    Methods, each raising :class:`slimlab.errors.ConfigError` with one line for a problem the user must fix:

    - ``reads(params, outputs) -> list[str]``: the names of the outputs it reads, from the model's
      :class:`OutputSpec` list; a model the task cannot read (two outputs and no ``output`` param, say) is
      refused here, before anything runs;
    - ``labels(params, y, what) -> np.ndarray``: the data set's labels checked and put in the task's own shape
      (``what`` names the data for errors);
    - ``metrics(params, outputs, labels) -> dict[str, float]``: the scores of a model's outputs on labelled data;
    - ``agreement(params, reference, outputs) -> dict[str, float]``: optional, task-specific agreement with the
      source model's outputs on the same inputs (e.g. top-1 agreement, boxes matched at IoU >= 0.5); it needs no
      labels, and joins the per-output fidelity.
    """

    name: str
    Params: type[TaskParams] = TaskParams
    needs_labels: bool = True
    stratify: bool = False
    better: dict[str, str] = {}
    headline: str = ""

    def reads(self, params: TaskParams, outputs: list[OutputSpec]) -> list[str]:
        raise NotImplementedError

    def labels(self, params: TaskParams, y: np.ndarray, what: str) -> np.ndarray:
        raise NotImplementedError

    def metrics(self, params: TaskParams, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def agreement(self, params: TaskParams, reference: dict[str, np.ndarray],
                  outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {}

    def validate(self, params: dict | None, where: str) -> TaskParams:
        return validated(self.Params, params, f"{where}: invalid params for task {self.name!r}")


def task(spec: dict | None) -> tuple[Task, TaskParams]:
    """The registered task a config's ``task`` block names, with its params validated."""
    spec = spec or DEFAULT
    try:
        found = registry.lookup(registry.tasks(), spec["name"], "task")
    except PluginError as exc:
        raise ConfigError(f"task.name: {exc}") from None
    return found, found.validate(spec.get("params"), "task")


def output_specs(outputs: dict[str, np.ndarray]) -> list[OutputSpec]:
    """The names and shapes (batch free) of a model's outputs, from what it gave for a batch."""
    return [OutputSpec(name, (None, *value.shape[1:])) for name, value in outputs.items()]


def choose(names: list[str], name: str | None, what: str) -> str:
    """The output ``name``, or the only output; a ConfigError line naming the outputs there are otherwise."""
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"{what}: the model has {len(names)} outputs ({', '.join(names)}); "
                              "say which one in task.params.output")
        return names[0]
    if name not in names:
        raise ConfigError(f"{what}: the model has no output {name!r}; its outputs: {', '.join(names)}")
    return name


# Helpers for tasks that read one output and class labels (the built-ins use them; so may yours).


def read_one(params: OutputParams, outputs: list[OutputSpec], task: str, rank: int, layout: str) -> list[str]:
    """The one output a task reads, refused with a ConfigError line unless it has ``rank`` dimensions."""
    name = choose([spec.name for spec in outputs], params.output, f"task {task}")
    shape = next(spec.shape for spec in outputs if spec.name == name)
    if len(shape) != rank:
        raise ConfigError(f"task {task}: output {name!r} has shape {shape}; expected {layout}")
    return [name]


def output_of(params: OutputParams, outputs: dict[str, np.ndarray], task: str) -> np.ndarray:
    """The array of the output a one-output task reads."""
    return outputs[choose(list(outputs), params.output, f"task {task}")]


def class_indices(y, what: str, layout: str, rank: int) -> np.ndarray:
    """Labels as int64 class indices of ``rank`` dimensions (a trailing axis of 1 dropped), or a ConfigError line."""
    y = np.asarray(y)
    if y.ndim == rank + 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim != rank:
        hint = " (one-hot? give class indices: y.argmax(axis=-1))" if y.ndim == rank + 1 else ""
        raise ConfigError(f"{what}: labels have shape {y.shape}; expected {layout}{hint}")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0):
        raise ConfigError(f"{what}: labels must be whole numbers (class indices), got {y.dtype} values like "
                          f"{y.ravel()[:3]}")
    if y.size and y.min() < 0:
        raise ConfigError(f"{what}: labels out of range: {int(y.min())} (class indices start at 0)")
    return y.astype(np.int64)


def check_classes(labels: np.ndarray, classes: int, task: str) -> None:
    """A ConfigError line when a label is not one of the model's ``classes``."""
    if labels.size and labels.max() >= classes:
        raise ConfigError(f"task {task}: label {int(labels.max())} is out of range for a model with {classes} classes")


def finite_numbers(y, what: str) -> np.ndarray:
    """Labels as float64, or a ConfigError line when they are not all finite numbers."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all():
        raise ConfigError(f"{what}: labels hold non-numeric, NaN or infinite values")
    return y.astype(np.float64)
