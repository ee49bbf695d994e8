"""Data sets and the fixed, seeded train/val/test split every stage sees.

A data set plugin registers a :class:`Dataset`: a name, typed params (validated
when the config loads, like stage params) and ``load(params)``, which returns
NHWC float32 images and their labels ``(x, y)``, or ``(x, y, x_test, y_test)``
when the data comes with its own test split; ``y`` is None for unlabelled data.
Labels are in the shape of the config's task (:mod:`slimlab.tasks`): class indices
for classification, boxes, landmarks or masks for others. ``digest(params)``, where given,
hashes the data's content: it is part of the identity of everything trained or
measured on it, so changed data reruns them. The config's ``dataset`` block
names it, gives its params, and sets the split: ``{name, params, seed,
val_fraction, test_fraction, calibration_fraction}``. A calibration split (0 by default:
post-training quantization then calibrates on training images) is held out of training.

The data is checked before any stage sees it: shapes, finite values, labels as the
task reads them, and, for a task of class labels, every class in every split. Each
problem is one line.
"""

import hashlib
import json
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import pydantic

from slimlab import registry, tasks
from slimlab.atomic import atomic_path
from slimlab.errors import ConfigError, PluginError, validated


class DatasetParams(pydantic.BaseModel):
    """Base for a data set's params: typed, with defaults; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Dataset:
    """A data set; ``register(Dataset(name, load, Params, digest=...))`` from ``register_datasets``.

    ``load(params) -> (x, y)`` or ``(x, y, x_test, y_test)``: images as NHWC (or (N, H, W), or (N, features))
    numbers, labels in the task's shape (class indices from 0 for classification), or None for unlabelled data
    (the task ``fidelity`` needs none); ``params`` is an instance of ``Params`` (a :class:`DatasetParams`),
    validated when the config loads. Raise :class:`slimlab.errors.ConfigError` for a problem with the user's
    data (a missing file, a bad shape): one line naming it. ``digest(params) -> str``, optional, hashes the data's
    content, so that changed data reruns everything made from it. The data is checked after ``load``.
    """

    name: str
    load: Callable[[DatasetParams], tuple]
    params: type[DatasetParams] = DatasetParams
    digest: Callable[[DatasetParams], str] | None = None

    @property
    def doc(self) -> str:
        return (self.load.__doc__ or "").strip().split("\n")[0]

    def validate(self, params: dict | None, where: str) -> DatasetParams:
        return validated(self.params, params, f"{where}: invalid params for data set {self.name!r}")


SPLIT_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_calibration")

# A model's inputs for a batch: one array, or several keyed by the model's input names.
Inputs = np.ndarray | dict[str, np.ndarray]


def count(x: Inputs) -> int:
    """How many samples ``x`` holds."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Inputs, index) -> Inputs:
    """The samples at ``index`` (a slice, or an array of positions) of every input."""
    return {name: array[index] for name, array in x.items()} if isinstance(x, dict) else x[index]


def arrays(x: Inputs) -> list[np.ndarray]:
    return list(x.values()) if isinstance(x, dict) else [x]


@dataclass(frozen=True)
class Splits:
    """The seeded train/val/test split; the ``y_*`` are None for unlabelled data, ``num_classes`` None for a task
    without class labels."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_val: np.ndarray
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    num_classes: int | None
    # Where there are no class labels: the source model's outputs on train and val, made when first asked for
    # (``{"train": {name: array}, "val": {...}}``), which fine-tuning learns (self-distillation).
    targets: Callable[[], dict] | None = None
    # Images held out of training for post-training quantization to calibrate on; None: it uses x_train.
    x_calibration: np.ndarray | None = None
    # The recipe's quality budget, for a step that fine-tunes (slimlab.budget.FitBudget); None: fit the set epochs.
    budget: object | None = None

    @property
    def labelled(self) -> bool:
        return self.y_train is not None

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Each input's shape without the batch, by name, where the data has several inputs; None for one."""
        return {name: tuple(x.shape[1:]) for name, x in self.x_train.items()} if isinstance(self.x_train, dict) \
            else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The one input's shape without the batch; a ConfigError line for data with several inputs."""
        if isinstance(self.x_train, dict):
            raise ConfigError(f"this step takes models of one input; the data has {len(self.x_train)} "
                              f"({', '.join(self.x_train)})")
        return tuple(self.x_train.shape[1:])

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest input value in the training split (over every input)."""
        return min(float(x.min()) for x in arrays(self.x_train)), max(float(x.max()) for x in arrays(self.x_train))

    def sizes(self) -> dict:
        found = {"train": count(self.x_train), "val": count(self.x_val), "test": count(self.x_test)}
        return found if self.x_calibration is None else {**found, "calibration": count(self.x_calibration)}


def split(x: Inputs, y: np.ndarray | None, seed: int, val_fraction: float, test_fraction: float,
          stratify: bool, calibration_fraction: float = 0.0) -> Splits:
    """Shuffle with ``seed`` and cut into train/val/test (and calibration); with ``stratify`` (class labels) each
    class is cut alone, so every split has every class."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": [], "calibration": []}
    groups = [np.flatnonzero(y == label) for label in np.unique(y)] if stratify else [np.arange(count(x))]
    for group in groups:
        idx = rng.permutation(group)
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        n_calibration = round(len(idx) * calibration_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["calibration"].append(idx[n_test + n_val : n_test + n_val + n_calibration])
        parts["train"].append(idx[n_test + n_val + n_calibration :])
    picked = {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}
    labels = {name: None if y is None else y[index] for name, index in picked.items()}
    return Splits(
        x_train=take(x, picked["train"]), y_train=labels["train"],
        x_val=take(x, picked["val"]), y_val=labels["val"],
        x_test=take(x, picked["test"]), y_test=labels["test"],
        num_classes=int(y.max()) + 1 if stratify else None,
        x_calibration=take(x, picked["calibration"]) if calibration_fraction else None,
    )


def images(x, what: str) -> Inputs:
    """Images as float32 NHWC (or (N, features)), or one ConfigError line saying what is wrong; several inputs
    (a dict by input name) each so, with as many samples."""
    if isinstance(x, dict):
        found = {name: images(array, f"{what} (input {name!r})") for name, array in x.items()}
        if len({len(array) for array in found.values()}) > 1:
            raise ConfigError(f"{what}: the inputs hold different numbers of samples: "
                              f"{', '.join(f'{name} {len(array)}' for name, array in found.items())}")
        return found
    x = np.asarray(x)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise ConfigError(f"{what}: images have shape {x.shape}; expected (N, H, W, C), (N, H, W) or (N, features)")
    if not len(x):
        raise ConfigError(f"{what}: holds no images")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ConfigError(f"{what}: images hold non-numeric, NaN or infinite values")
    return x.astype(np.float32)


def examples(x, y, what: str, task_spec: dict | None = None) -> tuple[Inputs, np.ndarray | None]:
    """Images as float32 NHWC and the labels as the task reads them (None: unlabelled), or one ConfigError line."""
    x = images(x, what)
    task, params = tasks.task(task_spec)
    if y is None:
        if task.needs_labels:
            raise ConfigError(f"{what}: has no labels, and task {task.name!r} needs them; give labels, or use "
                              "task: {name: fidelity}, which scores against the source model's outputs")
        return x, None
    y = np.asarray(y)
    if len(y) != count(x):
        raise ConfigError(f"{what}: {len(y)} labels for {count(x)} images; expected one label per image")
    return x, task.labels(params, y, what)


def check_classes(splits: Splits, name: str) -> Splits:
    """Every class from 0 to the largest label has samples in every split (for a task of class labels)."""
    if splits.num_classes is None:
        return splits
    for split, y in (("train", splits.y_train), ("val", splits.y_val), ("test", splits.y_test)):
        missing = sorted(set(range(splits.num_classes)) - set(np.unique(y).tolist()))
        if missing:
            raise ConfigError(f"data set {name!r}: class {missing[0]} has no {split} samples; give it more "
                              "samples, or change val_fraction/test_fraction (labels must run from 0 without gaps)")
    return splits


def dataset(spec: dict) -> tuple[Dataset, DatasetParams]:
    """The registered data set a config's ``dataset`` block names, with its params validated."""
    try:
        found = registry.lookup(registry.datasets(), spec["name"], "data set")
    except PluginError as exc:
        raise ConfigError(f"dataset.name: {exc}") from None
    return found, found.validate(spec.get("params"), "dataset")


def _load(name: str, params: DatasetParams, seed: int, val_fraction: float, test_fraction: float,
          calibration_fraction: float, task_spec: dict | None) -> Splits:
    loaded = registry.datasets()[name].load(params)
    x, y = examples(*loaded[:2], f"data set {name!r}", task_spec)
    stratify = y is not None and tasks.task(task_spec)[0].stratify  # class labels: every class in every split
    if len(loaded) == 2:
        return check_classes(split(x, y, seed, val_fraction, test_fraction, stratify, calibration_fraction), name)
    x_test, y_test = examples(*loaded[2:], f"data set {name!r} (test split)", task_spec)
    shapes = [{n: a.shape[1:] for n, a in part.items()} if isinstance(part, dict) else part.shape[1:]
              for part in (x_test, x)]
    if shapes[0] != shapes[1]:
        raise ConfigError(f"data set {name!r}: test images are {shapes[0]}, training images {shapes[1]}")
    if (y is None) != (y_test is None):
        raise ConfigError(f"data set {name!r}: labels for one split only; label both, or neither")
    # The data set's own test split stays as it is; validation comes out of the training part.
    train = split(x, y, seed, val_fraction, 0.0, stratify, calibration_fraction)
    both = Splits(train.x_train, train.y_train, train.x_val, train.y_val, x_test, y_test,
                  num_classes=int(max(y.max(), y_test.max())) + 1 if stratify else None,
                  x_calibration=train.x_calibration)
    return check_classes(both, name)


# Splits already made, one .npz per data set spec, so that a job loads them in milliseconds.
CACHE = Path("results/cache/data")


def load_spec(spec: dict) -> Splits:
    """Load and split from the config's ``dataset`` block (name, params, seed, val_fraction, test_fraction).

    The splits are cached on disk, keyed by the whole spec: the workflow's spec holds the data
    set's code fingerprint and content hash, so changed code or data never reads a stale cache.
    """
    found, params = dataset(spec)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cached = CACHE / f"{found.name}-{key}.npz"
    try:
        with np.load(cached, allow_pickle=False) as stored:
            classes = int(stored["num_classes"])
            return Splits(**{field: _stored(stored, field) for field in SPLIT_ARRAYS},
                          num_classes=None if classes < 0 else classes)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, or damaged: make it again
        pass
    splits = _cached_load(found.name, params, spec["seed"], spec["val_fraction"], spec["test_fraction"],
                          spec.get("calibration_fraction", 0.0), json.dumps(spec.get("task"), sort_keys=True))
    found = {}
    for field in SPLIT_ARRAYS:  # several inputs as "<field>/<input name>"
        value = getattr(splits, field)
        found.update({f"{field}/{n}": a for n, a in value.items()} if isinstance(value, dict)
                     else {} if value is None else {field: value})
    try:
        with atomic_path(cached) as tmp:
            np.savez(tmp, num_classes=-1 if splits.num_classes is None else splits.num_classes, **found)
    except OSError:
        pass  # a read-only working directory only costs the next job the load
    return splits


def _stored(stored, field: str) -> Inputs | None:
    if field in stored.files:
        return stored[field]
    several = {key.split("/", 1)[1]: stored[key] for key in stored.files if key.startswith(f"{field}/")}
    return several or None


@cache
def _cached_load(name: str, params: DatasetParams, seed: int, val_fraction: float, test_fraction: float,
                 calibration_fraction: float, task_json: str) -> Splits:
    """:func:`_load` once per process for one spec (the task as JSON: a dict is not hashable)."""
    return _load(name, params, seed, val_fraction, test_fraction, calibration_fraction, json.loads(task_json))
