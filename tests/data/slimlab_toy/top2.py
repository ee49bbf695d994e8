"""top2: a classifier scored by whether the true class is among its two highest logits."""

import numpy as np

from slimlab.api import ConfigError, Task, hookimpl


class Top2(Task):
    """Class indices, scored by top-2 accuracy."""

    name = "top2"
    stratify = True  # labels are class indices: the data is split class by class
    better = {"top2": "higher"}
    headline = "top2"

    def reads(self, params, outputs):
        if len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise ConfigError(f"task top2 reads one (batch, classes) output, the model gives {len(outputs)}")
        return [outputs[0].name]

    def labels(self, params, y, what):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"{what}: task top2 takes one class index per sample, got shape {y.shape}")
        return y.astype(np.int64)

    def metrics(self, params, outputs, labels):
        (logits,) = outputs.values()
        best_two = np.argsort(-logits, axis=1)[:, :2]
        return {"top2": float(np.mean((best_two == labels[:, None]).any(axis=1)))}


@hookimpl
def register_tasks(register):
    register(Top2())
