"""Data sets and the fixed, seeded train/val/test split every stage sees.

A data set plugin registers a :class:`Dataset`: a name, typed params (validated
when the config loads, like stage params) and ``load(params)``, which returns
NHWC float32 images and integer labels ``(x, y)``, or ``(x, y, x_test, y_test)``
when the data comes with its own test split. ``digest(params)``, where given,
hashes the data's content: it is part of the identity of everything trained or
measured on it, so changed data reruns them. The config's ``dataset`` block
names it, gives its params, and sets the split: ``{name, params, seed,
val_fraction, test_fraction}``.

The data is checked before any stage sees it: shapes, finite values, integer
labels from 0, and every class in every split. Each problem is one line.
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

from slimlab import registry
from slimlab.atomic import atomic_path
from slimlab.errors import ConfigError, PluginError, validated


class DatasetParams(pydantic.BaseModel):
    """Base for a data set's params: typed, with defaults; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Dataset:
    """A data set; ``register(Dataset(name, load, Params, digest=...))`` from ``register_datasets``.

    ``load(params) -> (x, y)`` or ``(x, y, x_test, y_test)``: images as NHWC (or (N, H, W), or (N, features))
    numbers, labels as class indices from 0; ``params`` is an instance of ``Params`` (a :class:`DatasetParams`),
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


SPLIT_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


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

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest input value in the training split."""
        return float(self.x_train.min()), float(self.x_train.max())

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


def examples(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 NHWC and labels as int64, or one ConfigError line saying what is wrong."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise ConfigError(f"{what}: images have shape {x.shape}; expected (N, H, W, C), (N, H, W) or (N, features)")
    if not len(x):
        raise ConfigError(f"{what}: holds no images")
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1), as keras.datasets gives them
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        hint = " (one-hot? give class indices: y.argmax(axis=1))" if y.ndim == 2 and len(y) == len(x) else ""
        raise ConfigError(f"{what}: labels have shape {y.shape}; expected one label per image ({len(x)}){hint}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ConfigError(f"{what}: images hold non-numeric, NaN or infinite values")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0):
        raise ConfigError(f"{what}: labels must be whole numbers (class indices), got {y.dtype} values like {y[:3]}")
    if y.size and y.min() < 0:
        raise ConfigError(f"{what}: labels out of range: {int(y.min())} (class indices start at 0)")
    return x.astype(np.float32), y.astype(np.int64)


def check_classes(splits: Splits, name: str) -> Splits:
    """Every class from 0 to the largest label has samples in every split."""
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


@cache
def _load(name: str, params: DatasetParams, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    loaded = registry.datasets()[name].load(params)
    x, y = examples(*loaded[:2], f"data set {name!r}")
    if len(loaded) == 2:
        return check_classes(stratified_split(x, y, seed, val_fraction, test_fraction), name)
    x_test, y_test = examples(*loaded[2:], f"data set {name!r} (test split)")
    if x_test.shape[1:] != x.shape[1:]:
        raise ConfigError(f"data set {name!r}: test images are {x_test.shape[1:]}, training images {x.shape[1:]}")
    # The data set's own test split stays as it is; validation comes out of the training part.
    train = stratified_split(x, y, seed, val_fraction, 0.0)
    split = Splits(train.x_train, train.y_train, train.x_val, train.y_val, x_test, y_test,
                   num_classes=int(max(y.max(), y_test.max())) + 1)
    return check_classes(split, name)


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
            return Splits(**{field: stored[field] for field in SPLIT_ARRAYS}, num_classes=int(stored["num_classes"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, or damaged: make it again
        pass
    splits = _load(found.name, params, spec["seed"], spec["val_fraction"], spec["test_fraction"])
    try:
        with atomic_path(cached) as tmp:
            np.savez(tmp, num_classes=splits.num_classes, **{field: getattr(splits, field) for field in SPLIT_ARRAYS})
    except OSError:
        pass  # a read-only working directory only costs the next job the load
    return splits
