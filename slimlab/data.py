"""Data sets and the fixed, seeded train/val/test split every stage sees."""

from dataclasses import dataclass
from functools import cache

import numpy as np

from slimlab import registry


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


@cache
def load(name: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """Load a registered data set as float32 NHWC in [0, 1] with int labels, then split it."""
    loader = registry.lookup(registry.datasets(), name, "data set")
    x, y = loader()
    return stratified_split(np.asarray(x, np.float32), np.asarray(y, np.int64), seed, val_fraction, test_fraction)


def load_spec(spec: dict) -> Splits:
    """Load from the config's ``dataset`` block (name, seed, val_fraction, test_fraction)."""
    return load(spec["name"], spec["seed"], spec["val_fraction"], spec["test_fraction"])
