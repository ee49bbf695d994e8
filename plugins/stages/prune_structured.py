"""prune.structured: remove whole channels of any functional graph, so its layers really get smaller.

Channels that must go together (a residual stream, a squeeze-excite gate and what it gates, the
slices of a concatenation, a depthwise conv and its producer, a Dense after Flatten) are found by
``slimlab.kit.depgraph`` and pruned as one unit; ``slimlab.kit.depgraph_prune`` scores, chooses
and rebuilds.
"""

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.kit.depgraph import PRODUCERS, SUPPORTED, DepGraph
from slimlab.kit.depgraph_prune import bn_importance, choose, l2_importance, shrink, taylor_importance, unit_scores
from slimlab.kit.surgery import PruneParams
from slimlab.kit.training import compile_and_fit
from slimlab.stages import Stage

STAGE = "prune.structured"


class StructuredParams(PruneParams):
    fraction: float = Field(0.5, ge=0, lt=1, description="fraction of channels (target: channels) or of the "
                            "model's MACs (target: macs) to remove")
    target: Literal["channels", "macs"] = Field("channels", description="what fraction counts")
    score: Literal["l2", "taylor", "bn"] = Field(
        "l2", description="l2: aggregated L2 norm of the group's weights; taylor: |w·∂L/∂w| on training batches; "
        "bn: |γ| of its BatchNormalization layers (groups without one are left alone)")
    scope: Literal["uniform", "global"] = Field(
        "uniform", description="uniform: the same fraction of every group; global: the weakest channels model-wide")
    per_layer: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict, description="layer name -> fraction for its group, overriding fraction "
        "(target: channels, scope: uniform)")
    min_channels: int = Field(4, ge=1, description="never keep fewer channels than this in a group")
    round_to: int = Field(1, ge=1, le=256, description="keep a multiple of this many channels in every pruned group "
                          "(16 suits XNNPACK's int8 kernels; a group that cannot shrink by a whole multiple stays)")
    taylor_batches: int = Field(4, ge=1, le=1000, description="training batches the taylor score sums gradients over")
    epochs: int = Field(4, ge=0, le=10000, description="fine-tuning epochs after the surgery (0: surgery only)")

    @model_validator(mode="after")
    def _per_layer_fits(self):
        outside = set(self.per_layer) - set(self.layers or self.per_layer)
        if outside:
            raise ValueError(f"per_layer: {', '.join(sorted(outside))} not among layers")
        if self.per_layer and (self.target, self.scope) != ("channels", "uniform"):
            raise ValueError("per_layer needs target: channels and scope: uniform")
        return self


def selected_groups(graph: DepGraph, params: StructuredParams) -> dict:
    """Group -> fraction of its channels, for every group a selected layer owns channels of."""
    producers = {name for name, call in graph.calls.items() if type(call.layer).__name__ in PRODUCERS}
    grouped = {name for group in graph.groups for name in group.layers}
    for key, name in [*(("layers", n) for n in params.layers or ()), *(("per_layer", n) for n in params.per_layer)]:
        if name not in producers:
            raise ConfigError(f"{STAGE}: {key}: the model has no prunable layer {name!r}; prunable "
                              f"({', '.join(PRODUCERS)}): {', '.join(sorted(grouped))}")
        if name not in grouped:
            raise ConfigError(f"{STAGE}: {key}: {name!r} produces the model's outputs, or channels tied to its "
                              "inputs or outputs; they cannot be pruned")
    if params.layers is not None:
        wanted = set(params.layers)
    else:
        types = params.layer_types or PRODUCERS
        wanted = {name for name in producers if type(graph.calls[name].layer).__name__ in types}
    chosen = {}
    for group in graph.groups:
        if not wanted & set(group.layers):
            continue
        if group.blocked_by:
            raise ConfigError(f"{STAGE}: cannot prune through layer {group.blocked_by}; it reads the channels of "
                              f"{', '.join(group.layers)}. Supported: {SUPPORTED} (or leave those layers out)")
        given = {params.per_layer[name] for name in group.layers if name in params.per_layer}
        if len(given) > 1:
            raise ConfigError(f"{STAGE}: per_layer: {', '.join(group.layers)} are pruned together; "
                              "give them one fraction")
        chosen[group] = given.pop() if given else params.fraction
    return chosen


def scores_for(model, params: StructuredParams, ctx, graph: DepGraph):
    if params.score == "taylor":
        per_weight = taylor_importance(model, ctx.splits, params.taylor_batches, params.batch_size, ctx.seed)
    else:
        per_weight = bn_importance(model) if params.score == "bn" else l2_importance(model)
    total, scored = unit_scores(graph, per_weight)
    return (np.sqrt(total) if params.score == "l2" else total), scored


def prune_structured(artifact, params: StructuredParams, ctx):
    """Remove the weakest channels of every dependency group of any functional graph, shrink it, fine-tune.

    Groups are ranked by ``score`` and cut uniformly or globally (``scope``) until ``fraction`` of
    the channels or of the MACs is gone (``target``); each keeps at least ``min_channels``, and a
    multiple of ``round_to``. Layers
    whose channels reach the model's outputs (the logits) keep them all. ``layers`` or
    ``layer_types`` restricts pruning to the groups those layers own channels of. A layer the
    dependency graph does not understand, reading channels that would be pruned, is refused by
    name. Records MACs and parameters before and after, and each pruned layer's channels.
    """
    model = artifact.model
    graph = DepGraph(model, STAGE)
    groups = selected_groups(graph, params)
    score, scored = scores_for(model, params, ctx, graph)
    unscored = [group for group in groups if not scored[group.units].any()]
    groups = {group: fraction for group, fraction in groups.items() if group not in unscored}
    removed = choose(graph, groups, score, target=params.target, scope=params.scope, fraction=params.fraction,
                     min_channels=params.min_channels, round_to=params.round_to, stage=STAGE)
    pruned = shrink(graph, removed)
    history = {}
    if params.epochs:
        history = compile_and_fit(pruned, ctx.splits, epochs=params.epochs, batch_size=params.batch_size,
                                  learning_rate=params.learning_rate, seed=ctx.seed)
    kept = graph.kept(removed)
    ctx.record(
        history=history,
        params_before=model.count_params(), params_after=pruned.count_params(),
        macs_before=graph.macs(np.zeros(0, np.int64)), macs_after=graph.macs(removed),
        channels={name: {"before": len(graph.ids[graph.calls[name].keys["out"]]),
                         "kept": len(kept[graph.calls[name].keys["out"]])}
                  for group in groups for name in group.layers},
        groups=[list(group.layers) for group in groups if len(group.layers) > 1],
        unscored=[list(group.layers) for group in unscored],
    )
    return pruned


@hookimpl
def register_stages(register):
    register(Stage(STAGE, prune_structured, StructuredParams, inputs=("keras",), output="keras", fine_tunes=True))
