"""Data sets and the fixed, seeded train/val/test split every stage sees.

A data set plugin registers a :class:`Dataset`: a name, typed params (validated
when the config loads, like stage params) and ``load(params)``, which returns
NHWC float32 images and integer labels. The config's ``dataset`` block names
it, gives its params, and sets the split: ``{name, params, seed, val_fraction,
test_fraction}``.
"""

from dataclasses import dataclass
from functools import cache
from typing import Callable

import numpy as np
import pydantic

from slimlab import registry
from slimlab.errors import ConfigError, PluginError


class DatasetParams(pydantic.BaseModel):
    """Base for a data set's params: typed, with defaults; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Dataset:
    name: str
    load: Callable[[DatasetParams], tuple[np.ndarray, np.ndarray]]
    params: type[DatasetParams] = DatasetParams

    @property
    def doc(self) -> str:
        return (self.load.__doc__ or "").strip().split("\n")[0]

    def validate(self, params: dict | None, where: str) -> DatasetParams:
        try:
            return self.params(**(params or {}))
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "params"
            raise ConfigError(f"{where}.params.{key}: {err['msg'].removeprefix('Value error, ')}") from None


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def stratified_split(x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """Shuffle each class with ``seed`` and cut it into train/val/test, so every split has every class."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    picked = {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}
    return Splits(
        x_train=x[picked["train"]], y_train=y[picked["train"]],
        x_val=x[picked["val"]], y_val=y[picked["val"]],
        x_test=x[picked["test"]], y_test=y[picked["test"]],
        num_classes=int(y.max()) + 1,
    )


def dataset(spec: dict) -> tuple[Dataset, DatasetParams]:
    """The registered data set a config's ``dataset`` block names, with its params validated."""
    try:
        found = registry.lookup(registry.datasets(), spec["name"], "data set")
    except PluginError as exc:
        raise ConfigError(f"dataset.name: {exc}") from None
    return found, found.validate(spec.get("params"), "dataset")


@cache
def _load(name: str, params: DatasetParams, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    x, y = registry.datasets()[name].load(params)
    return stratified_split(np.asarray(x, np.float32), np.asarray(y, np.int64), seed, val_fraction, test_fraction)


def load_spec(spec: dict) -> Splits:
    """Load and split from the config's ``dataset`` block (name, params, seed, val_fraction, test_fraction)."""
    found, params = dataset(spec)
    return _load(found.name, params, spec["seed"], spec["val_fraction"], spec["test_fraction"])
