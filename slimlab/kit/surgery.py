"""Keras model surgery shared by the prune stages.

- ``PruneParams`` and ``select_layers``: which Dense/Conv2D layers a prune stage touches.
- ``fine_tune_with_tfmot``: fine-tune with tfmot's pruning wrappers on the selected
  layers, then strip them, so the result is a plain Keras model.
- ``kernel_sparsity`` and ``max_nonzeros_per_group``: what the stages record.
- ``shrink_channels``: physically remove output channels of Conv2D/Dense layers and
  rewrite everything downstream (BatchNormalization, DepthwiseConv2D, Flatten, the
  next layer's fan-in) so the smaller model computes what the original computes
  with those channels' activations forced to zero.
"""

import math
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


# --- structured pruning ----------------------------------------------------------------

# Layers that act on each channel on its own, so a pruned channel stays a pruned channel.
# (Not Softmax or LayerNormalization: they mix channels, so dropping one changes the rest.)
_CHANNELWISE = (
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout2D", "GaussianNoise",
    "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D",
)


def layer_chain(model, stage: str) -> list:
    """The model's layers in order, if each one takes exactly the previous one's output.

    Sequential models and functional chains qualify; residual adds, concatenations,
    branches and multi-input/output models do not, and the error names the first
    layer that breaks the chain.
    """
    if isinstance(model, keras().Sequential):
        return list(model.layers)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"{stage}: model {model.name!r} has several inputs or outputs; only single-input chains can be rewritten")
    chain, previous = [], model.inputs[0]
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if layer.input is not previous:
            inputs = len(layer.input) if isinstance(layer.input, list) else 1
            raise ConfigError(
                f"{stage}: cannot rewrite layer {layer.name!r} ({type(layer).__name__}, {inputs} input(s)): "
                "only chains where each layer takes the previous layer's output are supported (no residual adds or branches)"
            )
        chain.append(layer)
        previous = layer.output
    if previous is not model.outputs[0]:
        raise ConfigError(f"{stage}: model {model.name!r} does not end with its last layer; only simple chains can be rewritten")
    return chain


def output_layer(chain: list, stage: str):
    """The last Conv2D/Dense: it produces the logits, so its outputs are never pruned."""
    weighted = [layer for layer in chain if type(layer).__name__ in PRUNABLE_TYPES]
    if not weighted:
        raise ConfigError(f"{stage}: the model has no Conv2D or Dense layer to prune")
    return weighted[-1]


def strongest_channels(kernel: np.ndarray, count: int) -> np.ndarray:
    """Indices (ascending) of the ``count`` output channels with the largest kernel-slice L2 norm."""
    norms = np.sqrt(np.square(kernel.reshape(-1, kernel.shape[-1])).sum(axis=0))
    return np.sort(np.argsort(-norms, kind="stable")[:count])


def shrink_channels(model, keep: dict[str, int], stage: str = "prune.structured"):
    """Rebuild ``model`` keeping ``keep[name]`` output channels of each named Conv2D/Dense.

    Walks the chain tracking which channels of the current tensor survive and
    slices each layer's weights to match:
    - a pruned Conv2D/Dense keeps its strongest output channels (kernel and bias);
    - every Conv2D/Dense drops the fan-in rows of removed input channels;
    - BatchNormalization keeps gamma/beta/mean/variance of surviving channels;
    - DepthwiseConv2D follows its input: removed channels go with their producer;
    - Flatten maps channel c of an HxWxC map to rows p*C + c for every position p;
    - channel-wise layers (activations, pooling, global pooling, dropout) pass through.

    Returns the new model and, per pruned layer, the indices of the channels it kept.
    """
    k = keras()
    chain = layer_chain(model, stage)
    if (last := output_layer(chain, stage).name) in keep:
        raise ConfigError(f"{stage}: layer {last!r} produces the model's outputs; its channels cannot be pruned")
    alive = None  # surviving channel indices of the current tensor; None means all of them
    rebuilt, kept = [], {}
    for layer in chain:
        kind, config, weights = type(layer).__name__, layer.get_config(), layer.get_weights()
        if kind in PRUNABLE_TYPES:
            if kind == "Conv2D" and (layer.groups != 1 or layer.data_format != "channels_last"):
                raise ConfigError(f"{stage}: cannot rewrite layer {layer.name!r}: only channels_last, ungrouped Conv2D is supported")
            if alive is not None:
                weights[0] = np.take(weights[0], alive, axis=-2)
            alive = None
            if layer.name in keep:
                alive = kept[layer.name] = strongest_channels(weights[0], keep[layer.name])
                weights = [np.take(w, alive, axis=-1) for w in weights]
                config["filters" if kind == "Conv2D" else "units"] = len(alive)
        elif alive is None:
            pass  # nothing upstream was pruned: copy the layer unchanged
        elif kind == "DepthwiseConv2D":
            multiplier = layer.depth_multiplier
            weights[0] = np.take(weights[0], alive, axis=2)
            # Output channel c*multiplier + j comes from input channel c.
            alive = (alive[:, None] * multiplier + np.arange(multiplier)).ravel()
            weights[1:] = [w[alive] for w in weights[1:]]
        elif kind == "BatchNormalization":
            if list(layer.axis) != [len(layer.input_shape) - 1]:
                raise ConfigError(f"{stage}: cannot rewrite layer {layer.name!r}: BatchNormalization must normalise the last axis")
            weights = [w[alive] for w in weights]
        elif kind == "Flatten":
            if layer.data_format != "channels_last":
                raise ConfigError(f"{stage}: cannot rewrite layer {layer.name!r}: only channels_last Flatten is supported")
            channels, positions = layer.input_shape[-1], math.prod(layer.input_shape[1:-1])
            alive = (np.arange(positions)[:, None] * channels + alive).ravel()
        elif kind not in _CHANNELWISE:
            raise ConfigError(f"{stage}: cannot rewrite layer {layer.name!r} ({kind}) after pruned channels; supported: "
                              "Conv2D, Dense, DepthwiseConv2D, BatchNormalization, Flatten and channel-wise layers")
        if kind != "InputLayer":
            rebuilt.append((type(layer).from_config(config), weights))
    inputs = k.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)
    if isinstance(model, k.Sequential):
        new = k.Sequential([inputs, *(layer for layer, _ in rebuilt)], name=model.name)
    else:
        x = inputs
        for layer, _ in rebuilt:
            x = layer(x)
        new = k.Model(inputs, x, name=model.name)
    for layer, weights in rebuilt:
        layer.set_weights(weights)
    return new, kept
