"""Keras model surgery shared by the prune stages.

- ``PruneParams`` and ``select_layers``: which Dense/Conv2D layers a prune stage touches.
- ``fine_tune_with_tfmot``: fine-tune with tfmot's pruning wrappers on the selected
  layers, then strip them, so the result is a plain Keras model.
- ``kernel_sparsity`` and ``max_nonzeros_per_group``: what the stages record.

Structured (channel) pruning lives in ``depgraph`` and ``depgraph_prune``.
"""

from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from slimlab.errors import ConfigError
from slimlab.stages import StageParams
from slimlab.kit.training import compile_and_fit, keras

PRUNABLE_TYPES = ("Conv2D", "Dense")


class PruneParams(StageParams):
    """Layer selection and fine-tuning, common to the prune stages."""

    layers: list[str] | None = Field(None, min_length=1, description="prune only these layers, by name")
    layer_types: list[Literal["Conv2D", "Dense"]] | None = Field(
        None, min_length=1, description="prune only layers of these types (default: every Conv2D and Dense)"
    )
    epochs: int = Field(4, ge=1, le=10000, description="fine-tuning epochs")
    batch_size: int = Field(64, ge=1, le=65536, description="fine-tuning batch size")
    learning_rate: float = Field(5e-4, gt=0, le=10, description="fine-tuning learning rate (Adam)")

    @field_validator("layer_types")
    @classmethod
    def _one_selection(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("layers") is not None:
            raise ValueError("give layers or layer_types, not both")
        return value


def select_layers(model, params: PruneParams, stage: str) -> list:
    """The layers ``params`` selects; unknown or unprunable names are a one-line error."""
    candidates = [layer for layer in model.layers if type(layer).__name__ in PRUNABLE_TYPES]
    if params.layers is None:
        types = params.layer_types or PRUNABLE_TYPES
        return [layer for layer in candidates if type(layer).__name__ in types]
    by_name = {layer.name: layer for layer in model.layers}
    for name in params.layers:
        if name not in by_name:
            raise ConfigError(f"{stage}: layers: the model has no layer {name!r}; it has {', '.join(by_name)}")
        if by_name[name] not in candidates:
            raise ConfigError(f"{stage}: layers: {name!r} is a {type(by_name[name]).__name__}; only Conv2D and Dense can be pruned")
    return [by_name[name] for name in params.layers]


def fine_tune_with_tfmot(model, selected: list, params: PruneParams, ctx, **prune_args):
    """Wrap ``selected`` in ``prune_low_magnitude(**prune_args)``, fine-tune, strip the wrappers.

    Returns the plain Keras model (weights carry the final mask) and the training history.
    """
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    names = {layer.name for layer in selected}
    wrapped = keras().models.clone_model(
        model,
        # Returning the layer itself (not a copy) keeps its trained weights.
        clone_function=lambda layer: sparsity.prune_low_magnitude(layer, **prune_args) if layer.name in names else layer,
    )
    history = compile_and_fit(
        wrapped, ctx.splits, epochs=params.epochs, batch_size=params.batch_size,
        learning_rate=params.learning_rate, seed=ctx.seed, callbacks=[sparsity.UpdatePruningStep()],
    )
    return sparsity.strip_pruning(wrapped), history


def kernel_sparsity(model, names) -> dict[str, float]:
    """Fraction of exact zeros in each named layer's kernel."""
    kernels = {name: model.get_layer(name).kernel.numpy() for name in names}
    return {name: round(float(1.0 - np.count_nonzero(kernel) / kernel.size), 5) for name, kernel in kernels.items()}


def max_nonzeros_per_group(kernel: np.ndarray, m: int) -> int:
    """The most nonzeros in any group of ``m`` consecutive inputs (the kernel's axis -2), per output and tap."""
    rows = np.moveaxis(kernel, -2, -1).reshape(-1, kernel.shape[-2])
    padded = np.pad(rows, [(0, 0), (0, -rows.shape[1] % m)])
    return int(np.count_nonzero(padded.reshape(len(rows), -1, m), axis=-1).max())
