"""prune.structured: remove whole channels/units, so Conv2D, DepthwiseConv2D and Dense layers get smaller."""

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.stages import Stage
from slimlab.kit.surgery import PruneParams, layer_chain, output_layer, select_layers, shrink_channels
from slimlab.kit.training import compile_and_fit


class StructuredParams(PruneParams):
    fraction: float = Field(0.5, ge=0, lt=1, description="fraction of each selected layer's output channels to remove")
    per_layer: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict, description="layer name -> fraction, overriding fraction"
    )
    min_channels: int = Field(4, ge=1, description="never keep fewer channels than this in a layer")
    epochs: int = Field(4, ge=0, le=10000, description="fine-tuning epochs after the surgery (0: surgery only)")

    @field_validator("per_layer")
    @classmethod
    def _among_layers(cls, value, info: ValidationInfo):
        outside = set(value) - set(info.data.get("layers") or value)
        if outside:
            raise ValueError(f"{', '.join(sorted(outside))} not among layers")
        return value


def prune_structured(artifact, params: StructuredParams, ctx):
    """Remove the weakest output channels (L2 norm) of Conv2D/Dense layers and shrink the model.

    Each selected layer keeps max(min_channels, round(C * (1 - fraction)))
    of its C output channels (``per_layer`` overrides ``fraction`` by name),
    ranked by the L2 norm of their kernel slices. The layers that read those
    channels shrink with them: BatchNormalization, DepthwiseConv2D (its
    channels follow its input), the next Conv2D/Dense's fan-in, and a
    Dense after Flatten (its rows for the removed channels at every spatial
    position). The logits layer keeps all its outputs. Unlike masking, this
    removes FLOPs and parameters. Works on Sequential models and functional
    chains; residual adds, concatenations and branches are rejected with the
    layer's name. Then fine-tunes for ``epochs``. Records parameter counts
    before and after, and each layer's channels before and kept.
    """
    model = artifact.model
    last = output_layer(layer_chain(model, "prune.structured"), "prune.structured")
    if params.layers is not None and last.name in params.layers:
        raise ConfigError(f"prune.structured: layers: {last.name!r} produces the model's outputs; its channels cannot be pruned")
    selected = [layer for layer in select_layers(model, params, "prune.structured") if layer is not last]
    unknown = set(params.per_layer) - {layer.name for layer in selected}
    if unknown:
        raise ConfigError(f"prune.structured: per_layer: {', '.join(sorted(unknown))} not among the pruned layers")
    keep = {}
    for layer in selected:
        channels = layer.kernel.shape[-1]
        fraction = params.per_layer.get(layer.name, params.fraction)
        keep[layer.name] = min(channels, max(params.min_channels, round(channels * (1 - fraction))))
    pruned, kept = shrink_channels(model, keep)
    history = {}
    if params.epochs:
        history = compile_and_fit(
            pruned, ctx.splits, epochs=params.epochs, batch_size=params.batch_size,
            learning_rate=params.learning_rate, seed=ctx.seed,
        )
    ctx.record(
        history=history,
        params_before=model.count_params(), params_after=pruned.count_params(),
        channels={name: {"before": model.get_layer(name).kernel.shape[-1], "kept": len(idx)} for name, idx in kept.items()},
    )
    return pruned


@hookimpl
def register_stages(register):
    register(Stage("prune.structured", prune_structured, StructuredParams, inputs=("keras",), output="keras"))
