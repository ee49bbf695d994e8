"""prune.nm: N:M semi-structured sparsity (default 2:4) along the input dimension."""

from pydantic import Field, ValidationInfo, field_validator

from slimlab import hookimpl
from slimlab.stages import Stage
from slimlab.kit.surgery import PruneParams, fine_tune_with_tfmot, kernel_sparsity, max_nonzeros_per_group, select_layers


class NMParams(PruneParams):
    n: int = Field(2, ge=1, description="nonzero weights kept in every group of m")
    m: int = Field(4, ge=2, validate_default=True, description="group size: consecutive input channels of one output (and kernel tap)")
    epochs: int = Field(2, ge=1, le=10000, description="fine-tuning epochs under the fixed N:M mask")

    @field_validator("m")
    @classmethod
    def _above_n(cls, value, info: ValidationInfo):
        if value <= info.data.get("n", 0):
            raise ValueError(f"must be above n ({info.data['n']}), or nothing is pruned")
        return value


def prune_nm(artifact, params: NMParams, ctx):
    """Keep the n largest of every m consecutive input weights (2:4 by default), then fine-tune.

    For each output channel (and each kernel tap of a Conv2D), the input
    channels are cut into groups of ``m``; the ``n`` largest |w| of each group
    survive. This is the pattern sparse kernels such as XNNPACK's and NVIDIA's
    2:4 exploit. tfmot's ``sparsity_m_by_n`` fixes the mask at the first step
    and keeps it through ``epochs`` of fine-tuning. Layers whose fan-in is
    below ``m`` (such as a first conv on one-channel images) stay dense.
    Records each selected kernel's sparsity and the most nonzeros found in any
    group, which must be at most ``n``.
    """
    model = artifact.model
    selected = select_layers(model, params, "prune.nm")
    pruned, history = fine_tune_with_tfmot(model, selected, params, ctx, sparsity_m_by_n=(params.m - params.n, params.m))
    names = [layer.name for layer in selected]
    group_max = {name: max_nonzeros_per_group(pruned.get_layer(name).kernel.numpy(), params.m) for name in names}
    ctx.record(
        history=history, kernel_sparsity=kernel_sparsity(pruned, names),
        max_nonzeros_per_group=group_max, pattern_holds=max(group_max.values()) <= params.n,
    )
    return pruned


@hookimpl
def register_stages(register):
    register(Stage("prune.nm", prune_nm, NMParams, inputs=("keras",), output="keras", fine_tunes=True))
