"""segmentation: a class per pixel, scored by mean IoU.

Reads: one output of per-pixel logits, channel-last (batch, height, width, classes); ``output`` names it when
the model has several. Params: ``output``; ``ignore_index``, a label value whose pixels are not scored (often
255 on borders). Labels: integer masks of class indices from 0, shape (N, H, W) ((N, H, W, 1) is accepted), the
size of the output.
Metrics: ``miou``, the IoU of each class averaged over the classes present in the labels or the predictions, and
``pixel_accuracy``; both from one confusion matrix over every scored pixel.
"""

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.tasks import OutputParams, Task, check_classes, class_indices, output_of, read_one


class SegmentationParams(OutputParams):
    """Which output to read, and which label value is not scored."""

    ignore_index: int | None = Field(None, ge=0, description="label of pixels left out of the scores, e.g. 255")


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """The (classes, classes) pixel counts: row = true class, column = predicted class."""
    return np.bincount(classes * truth + predicted, minlength=classes * classes).reshape(classes, classes)


class Segmentation(Task):
    """Per-pixel class indices scored by mean IoU and pixel accuracy."""

    name = "segmentation"
    Params = SegmentationParams
    needs_labels = True
    stratify = False
    better = {"miou": "higher", "pixel_accuracy": "higher"}
    headline = "miou"

    def reads(self, params, outputs):
        """The logits output, which must be (batch, height, width, classes)."""
        return read_one(params, outputs, self.name, 4, "(batch, height, width, classes) logits, channel-last")

    def labels(self, params, y, what):
        """Class-index masks, shape (N, H, W)."""
        return class_indices(y, what, "a mask of class indices per sample, (N, H, W)", 3)

    def metrics(self, params, outputs, labels):
        """``miou`` and ``pixel_accuracy`` over the pixels whose label is not ``ignore_index``."""
        logits = output_of(params, outputs, self.name)
        if labels.shape != logits.shape[:3]:
            raise ConfigError(f"task {self.name}: masks of shape {labels.shape} do not fit the output's "
                              f"{logits.shape}: expected {logits.shape[:3]}")
        scored = labels != params.ignore_index
        if not scored.any():
            raise ConfigError(f"task {self.name}: every pixel's label is ignore_index ({params.ignore_index})")
        classes = logits.shape[-1]
        truth = labels[scored]
        check_classes(truth, classes, self.name)
        counts = confusion(truth, logits.argmax(axis=-1)[scored], classes)
        hits = np.diag(counts)
        union = counts.sum(axis=0) + counts.sum(axis=1) - hits
        present = union > 0
        return {"miou": float(np.mean(hits[present] / union[present])),
                "pixel_accuracy": float(hits.sum() / counts.sum())}


@hookimpl
def register_tasks(register):
    register(Segmentation())
