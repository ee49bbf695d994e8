"""prune.magnitude: iterative unstructured (synapse) pruning with tfmot's prune_low_magnitude."""

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from slimlab import data, hookimpl
from slimlab.stages import Stage
from slimlab.kit.surgery import PruneParams, fine_tune_with_tfmot, kernel_sparsity, select_layers


class MagnitudeParams(PruneParams):
    sparsity: float = Field(0.85, gt=0, lt=1, description="fraction of each selected kernel's weights set to zero")
    schedule: Literal["polynomial", "constant"] = Field(
        "polynomial", description="polynomial: ramp from initial_sparsity to sparsity; constant: sparsity from the start"
    )
    initial_sparsity: float = Field(0.0, ge=0, lt=1, description="polynomial schedule only: sparsity at the first step")
    epochs: int = Field(8, ge=1, le=10000, description="fine-tuning epochs; the polynomial ramp spans the first half")

    @field_validator("initial_sparsity")
    @classmethod
    def _fits_schedule(cls, value, info: ValidationInfo):
        if info.data.get("schedule") == "constant":
            if value:  # the default, 0, is what a resolved step passes back in
                raise ValueError("only the polynomial schedule uses it")
            return value
        if value >= info.data.get("sparsity", 1):
            raise ValueError(f"must be below sparsity ({info.data['sparsity']})")
        return value


def pruning_schedule(params: MagnitudeParams, steps_per_epoch: int):
    """A tfmot schedule whose last mask update lands exactly on the end of the ramp."""
    from tensorflow_model_optimization.sparsity import keras as sparsity

    frequency = max(1, steps_per_epoch // 4)  # re-rank the weights four times per epoch
    if params.schedule == "constant":
        return sparsity.ConstantSparsity(params.sparsity, begin_step=0, frequency=frequency)
    # Ramp over the first half of fine-tuning; the second half recovers at the target.
    ramp = steps_per_epoch * math.ceil(params.epochs / 2)
    return sparsity.PolynomialDecay(
        params.initial_sparsity, params.sparsity, begin_step=0,
        end_step=frequency * max(1, ramp // frequency), frequency=frequency,
    )


def prune_magnitude(artifact, params: MagnitudeParams, ctx):
    """Zero the smallest-magnitude weights of Dense/Conv2D kernels while fine-tuning (tfmot).

    Every few steps tfmot ranks each selected kernel's weights by |w| and masks
    the smallest until the kernel has the scheduled sparsity. ``polynomial``
    raises it from ``initial_sparsity`` to ``sparsity`` over the first half of
    the ``epochs`` (gradual pruning, Zhu & Gupta 2017) and fine-tunes at the
    target for the rest; ``constant`` prunes to ``sparsity`` at once. Select
    layers by name (``layers``) or type (``layer_types``); default every
    Conv2D and Dense. The zeros are real: the sidecar's sparsity counts them,
    and the per-layer kernel sparsity is recorded.
    """
    model = artifact.model
    selected = select_layers(model, params, "prune.magnitude")
    steps = math.ceil(data.count(ctx.splits.x_train) / params.batch_size)
    pruned, history = fine_tune_with_tfmot(model, selected, params, ctx, pruning_schedule=pruning_schedule(params, steps))
    ctx.record(history=history, kernel_sparsity=kernel_sparsity(pruned, [layer.name for layer in selected]))
    return pruned


@hookimpl
def register_stages(register):
    register(Stage("prune.magnitude", prune_magnitude, MagnitudeParams, inputs=("keras",), output="keras", fine_tunes=True))
