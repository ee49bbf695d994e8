"""Keras training for stage authors: architectures, fitting and calibration samples.

Models are tf_keras (Keras 2) models, because tfmot works only on those;
``slimlab`` sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow loads.
"""

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pydantic

from slimlab import data, registry
from slimlab.errors import ConfigError, PluginError
from slimlab.kit import batchnorm


def keras():
    """tf_keras, imported on first use: jobs that never touch Keras never pay for TensorFlow."""
    import tf_keras

    return tf_keras


@dataclass(frozen=True)
class Architecture:
    """A model ``train`` can build; ``register(Architecture(name, build))`` from ``register_models``.

    ``build(input_shape, num_classes, **params)`` returns an untrained tf_keras model (build it with
    :func:`keras`) whose input is ``(None, *input_shape)`` and whose output is ``num_classes`` logits (no softmax).
    Its keyword arguments are ``train``'s ``model_params``; their annotations are checked when the config loads.
    """

    name: str
    build: Callable

    def check(self, params: dict) -> None:
        """Raise ValueError unless the builder takes ``params`` with these types."""
        signature = inspect.signature(self.build)
        try:
            signature.bind(None, None, **params)
        except TypeError as exc:
            raise ValueError(f"model_params do not fit model {self.name!r}: {exc}") from None
        for key, value in params.items():
            annotation = signature.parameters[key].annotation
            if annotation is not inspect.Parameter.empty:
                try:
                    pydantic.TypeAdapter(annotation).validate_python(value)
                except pydantic.ValidationError as exc:
                    raise ValueError(f"model_params.{key} of model {self.name!r}: {exc.errors()[0]['msg']}") from None


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; ValueError (for a params validator) if there is none."""
    try:
        return registry.lookup(registry.models(), name, "model")
    except PluginError as exc:
        raise ValueError(str(exc)) from None


def build_model(name: str, params: dict, splits, seed: int):
    """A registered architecture for this data set, with its initial weights drawn from ``seed``."""
    class_labels(splits, "train")
    keras().utils.set_random_seed(seed)
    return architecture(name).build(splits.input_shape, splits.num_classes, **params)


def class_labels(splits, stage: str):
    """The training labels as class indices; a ConfigError line for data without them (another task's, or none)."""
    if splits.num_classes is None:
        raise ConfigError(f"{stage} needs class labels (task classification); this data has "
                          f"{'labels of another task' if splits.labelled else 'no labels'}")
    return splits.y_train


def fit_targets(model, splits) -> tuple[list, list]:
    """What a model learns from: class labels (cross-entropy on logits), or, without them, the outputs of the model
    it was made from (``splits.targets``: self-distillation, mean squared error per output). (train, val)."""
    if splits.num_classes is not None:
        return splits.y_train, splits.y_val
    if splits.targets is None:
        raise ConfigError("fine-tuning without class labels learns from the source model's outputs, and this step "
                          "has no source model (train a model on class labels, or import one)")
    found = splits.targets()  # in the source model's output order, which compression keeps
    return list(found["train"].values()), list(found["val"].values())


def compile_and_fit(model, splits, *, epochs: int, batch_size: int, learning_rate: float, seed: int, callbacks=()):
    """Train on the train split with seeded shuffling, then refresh the BatchNormalization statistics
    (:func:`slimlab.kit.batchnorm.refresh`); return per-epoch history for the sidecar, with ``batchnorm``: what the
    refresh did, where the model has BatchNormalization layers. Without class labels, the model learns its source
    model's outputs (:func:`fit_targets`). With the recipe's quality budget (``splits.budget``, for a stage that
    ``fine_tunes``), fine-tuning goes on past ``epochs`` while validation is outside it (``budget``: what happened;
    :mod:`slimlab.budget`)."""
    k = keras()
    k.utils.set_random_seed(seed)
    train, val = fit_targets(model, splits)
    labelled = splits.num_classes is not None
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True) if labelled else k.losses.MeanSquaredError(),
        metrics=["accuracy"] if labelled else [],
    )
    found: dict = {}

    def fit(first: int, last: int) -> None:
        history = model.fit(splits.x_train, train, validation_data=(splits.x_val, val), initial_epoch=first,
                            epochs=last, batch_size=batch_size, callbacks=list(callbacks), verbose=0)
        for name, values in history.history.items():
            found.setdefault(name, []).extend(round(float(v), 5) for v in values)
        refreshed = batchnorm.refresh(model, splits, val)
        if refreshed:  # the last refresh's account
            found["batchnorm"] = refreshed

    fit(0, epochs)
    if splits.budget is not None:
        found["budget"] = splits.budget.fit(model, epochs, lambda epoch: fit(epoch, epoch + 1))
    return found


def representative_samples(splits, count: int, seed: int):
    """A seeded sample of the calibration split's inputs (the training split's, without one), one batch of 1 at a
    time: ``[batch]``, or for several inputs a dict of batches by input name (as TFLite's calibration takes them)."""
    found = splits.x_train if splits.x_calibration is None else splits.x_calibration
    rng = np.random.default_rng(seed)
    picked = rng.choice(data.count(found), size=min(count, data.count(found)), replace=False)

    def generate():
        for i in picked:
            one = data.take(found, slice(i, i + 1))
            yield one if isinstance(one, dict) else [one]

    return generate
