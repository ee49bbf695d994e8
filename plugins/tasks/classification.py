"""classification: one class per sample, scored by accuracy.

Reads: one output of logits or probabilities, shape (batch, classes); ``output`` names it when the model has
several. Params: ``output``. Labels: class indices from 0, shape (N,) (keras.datasets' (N, 1) is accepted).
Metrics: ``accuracy`` (top-1) and, with 10 classes or more, ``top5``. Agreement with the source model:
``top1_agreement``, the fraction of samples whose top class is the same.
"""

import numpy as np

from slimlab import hookimpl
from slimlab.tasks import OutputParams, Task, check_classes, class_indices, output_of, read_one
from slimlab_payload.evaluate import top1


class Classification(Task):
    """Class indices scored by top-1 (and top-5) accuracy."""

    name = "classification"
    Params = OutputParams
    needs_labels = True
    stratify = True
    better = {"accuracy": "higher", "top5": "higher"}
    headline = "accuracy"

    def reads(self, params, outputs):
        """The logits output, which must be (batch, classes)."""
        return read_one(params, outputs, self.name, 2, "(batch, classes) logits")

    def labels(self, params, y, what):
        """Class indices, shape (N,)."""
        return class_indices(y, what, "one class index per sample, (N,)", 1)

    def metrics(self, params, outputs, labels):
        """``accuracy``, and ``top5`` when there are 10 classes or more."""
        logits = output_of(params, outputs, self.name)
        check_classes(labels, logits.shape[1], self.name)
        scores = {"accuracy": float(np.mean(logits.argmax(axis=1) == labels))}
        if logits.shape[1] >= 10:
            top5 = np.argsort(-logits, axis=1)[:, :5]
            scores["top5"] = float(np.mean((top5 == labels[:, None]).any(axis=1)))
        return scores

    def agreement(self, params, reference, outputs):
        """``top1_agreement``: the fraction of samples whose top class is the source model's."""
        # The device payload's own function: a device's evaluation agrees the same way.
        return {"top1_agreement": top1(np, *(output_of(params, side, self.name) for side in (reference, outputs)))}


@hookimpl
def register_tasks(register):
    register(Classification())
