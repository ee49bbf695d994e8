"""regression: real-valued targets (landmarks, keypoints, ages), scored by mean absolute error.

Reads: one output of any shape; ``output`` names it when the model has several. Labels: finite numbers, shape
(N, ...), with as many values per sample as the output has (the shapes may differ: (N, 136) labels fit a
(N, 68, 2) output). Params: ``output``, and ``normaliser`` for landmarks: ``{points: [36, 45], dims: 2}`` scores
68-point faces by their inter-ocular NME (landmarks 36 and 45 are the outer eye corners).
Metrics: ``mae``, the mean |output - label| over every value; with a ``normaliser``, ``nme``: per sample, the mean
Euclidean distance between predicted and true landmarks divided by the true distance between the two
``points``, averaged over the samples.
"""

import numpy as np
from pydantic import Field, NonNegativeInt, field_validator

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.tasks import OutputParams, Task, TaskParams, choose, finite_numbers, output_of


class Normaliser(TaskParams):
    """The two landmarks whose true distance divides the error (normalised mean error, NME)."""

    points: tuple[NonNegativeInt, NonNegativeInt] = Field(
        description="landmarks i and j, counted from 0: e.g. the outer eye corners")
    dims: int = Field(2, ge=1, le=3, description="coordinates per landmark: a sample's values are (landmarks, dims)")

    @field_validator("points")
    @classmethod
    def _distinct(cls, points):
        if points[0] == points[1]:
            raise ValueError("must be two different landmarks")
        return points


class RegressionParams(OutputParams):
    """Which output to read, and how to normalise a landmark error."""

    normaliser: Normaliser | None = Field(None, description="score nme too: landmark errors over a true distance")


def nme(predicted: np.ndarray, truth: np.ndarray, normaliser: Normaliser) -> float:
    """The mean over samples of the mean landmark distance divided by the true distance between ``points``."""
    if predicted.shape[1] % normaliser.dims:
        raise ConfigError(f"task.params.normaliser.dims: {predicted.shape[1]} values per sample do not split "
                          f"into landmarks of {normaliser.dims}")
    predicted, truth = (values.reshape(len(values), -1, normaliser.dims) for values in (predicted, truth))
    i, j = normaliser.points
    if max(i, j) >= truth.shape[1]:
        raise ConfigError(f"task.params.normaliser.points: landmark {max(i, j)} is out of range; "
                          f"the output holds {truth.shape[1]} landmarks")
    scale = np.linalg.norm(truth[:, i] - truth[:, j], axis=-1)
    if not scale.all():
        raise ConfigError(f"task.params.normaliser.points: landmarks {i} and {j} coincide in some samples' labels")
    error = np.linalg.norm(predicted - truth, axis=-1).mean(axis=1)
    return float(np.mean(error / scale))


class Regression(Task):
    """Real-valued targets scored by MAE (and NME for landmarks)."""

    name = "regression"
    Params = RegressionParams
    needs_labels = True
    stratify = False
    better = {"mae": "lower", "nme": "lower"}
    headline = "mae"

    def reads(self, params, outputs):
        """The one output, of any shape."""
        return [choose([spec.name for spec in outputs], params.output, f"task {self.name}")]

    def labels(self, params, y, what):
        """Finite numbers, shape (N, ...)."""
        y = finite_numbers(y, what)
        if y.ndim == 0:
            raise ConfigError(f"{what}: labels are a single number; expected one target per sample, (N, ...)")
        return y

    def metrics(self, params, outputs, labels):
        """``mae``, and ``nme`` with a normaliser."""
        output = output_of(params, outputs, self.name)
        predicted, truth = output.reshape(len(output), -1), labels.reshape(len(labels), -1)
        if predicted.shape != truth.shape:
            raise ConfigError(f"task {self.name}: labels of shape {labels.shape} do not fit the output's "
                              f"{output.shape}: they need the same samples and values per sample")
        scores = {"mae": float(np.mean(np.abs(predicted - truth)))}
        if params.normaliser:
            scores["nme"] = nme(predicted, truth, params.normaliser)
        return scores


@hookimpl
def register_tasks(register):
    register(Regression())
