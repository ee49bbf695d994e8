"""Structured pruning over dependency groups (``depgraph``): score units, choose which go, rebuild smaller.

- Scores are per unit, summed over every weight slice the unit owns: producers' output slices,
  consumers' input slices, BatchNormalization and depthwise channels. ``l2``: the aggregated L2
  norm. ``taylor``: first-order Taylor, Σ|w·∂L/∂w| with the gradient summed over a few training
  batches (Molchanov et al., 2019). ``bn``: Σ|γ| of the unit's BatchNormalization layers (network
  slimming, Liu et al., 2017); a group without one gets no score.
- ``uniform`` removes the same fraction of every group; ``global`` ranks every unit by its score
  over its group's mean score (Torch-Pruning's mean normaliser) and removes the lowest. The target
  is a fraction of channels, or of the model's MACs (the fraction or count found by bisection).
- ``shrink`` rebuilds the model with every weight sliced to the surviving channels.
"""

import numpy as np

from slimlab import data
from slimlab.errors import ConfigError
from slimlab.kit.depgraph import PRODUCERS, DepGraph, Group, copy_layer, rebuild
from slimlab.kit.training import class_labels, keras


def weight_axes(layer) -> list[tuple[int, int, str]]:
    """``(weight index, axis, role)`` for every weight axis that runs over the channels of a role's tensor."""
    kind = type(layer).__name__
    bias = [(len(layer.weights) - 1, 0, "out")] if getattr(layer, "use_bias", False) else []
    if kind in ("Conv2D", "Dense"):
        return [(0, -2, "in"), (0, -1, "out"), *bias]
    if kind == "Conv2DTranspose":  # its kernel is (h, w, out, in)
        return [(0, -1, "in"), (0, -2, "out"), *bias]
    if kind == "SeparableConv2D":
        return [(0, 2, "in"), (1, 2, "mid"), (1, 3, "out"), *bias]
    if kind == "DepthwiseConv2D":
        return [(0, 2, "in"), *bias]
    if kind == "BatchNormalization":
        return [(index, 0, "in") for index in range(len(layer.weights))]
    return []


def l2_importance(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.square(w) for w in layer.get_weights()] for layer in model.layers}


def bn_importance(model) -> dict[str, list[np.ndarray]]:
    """|γ| of every BatchNormalization (0 for its other weights); other layers do not score."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras().layers.BatchNormalization) and layer.scale:
            found[layer.name] = [np.abs(w) if w is layer.gamma else np.zeros(w.shape) for w in layer.weights]
    return found


def taylor_importance(model, splits, batches: int, batch_size: int, seed: int) -> dict[str, list[np.ndarray]]:
    """|w · Σ ∂L/∂w| over ``batches`` seeded training batches (the loss on logits, as slimlab trains)."""
    import tensorflow as tf

    labels = class_labels(splits, "prune.structured's taylor criterion")
    picked = np.random.default_rng(seed).permutation(data.count(splits.x_train))[: batches * batch_size]
    loss = keras().losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_weights
    summed = [np.zeros(v.shape, np.float64) for v in variables]
    for chunk in np.array_split(picked, batches):
        with tf.GradientTape() as tape:
            value = loss(labels[chunk], model(data.take(splits.x_train, chunk), training=False))
        for total, grad in zip(summed, tape.gradient(value, variables)):
            if grad is not None:  # a variable the loss does not reach
                total += np.asarray(grad)
    grads = {v.ref(): g for v, g in zip(variables, summed)}
    return {layer.name: [np.abs(w.numpy() * grads.get(w.ref(), 0.0)) for w in layer.weights] for layer in model.layers}


def unit_scores(graph: DepGraph, per_weight: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's summed importance, by root id, and whether any weight scored it."""
    total, scored = np.zeros(len(graph.roots)), np.zeros(len(graph.roots), bool)
    for name, call in graph.calls.items():
        for index, axis, role in weight_axes(call.layer) if name in per_weight else ():
            values = np.moveaxis(per_weight[name][index], axis, 0)
            roots = graph.roots[graph.ids[call.keys[role]]]
            np.add.at(total, roots, values.reshape(len(values), -1).sum(axis=1))
            scored[roots] = True
    return total, scored


def removable(group: Group, scores: np.ndarray, min_channels: int) -> np.ndarray:
    """The group's units that may go, weakest first: all but its ``min_channels`` strongest."""
    order = group.units[np.argsort(scores[group.units], kind="stable")]
    return order[: max(0, len(order) - min_channels)]


def uniform(groups: dict[Group, float], scores, min_channels: int) -> np.ndarray:
    """Remove each group's fraction of its units (keeping round(C·(1 − f)), at least min_channels), weakest first."""
    removed = [removable(group, scores, min_channels)[: len(group.units) - round(len(group.units) * (1 - fraction))]
               for group, fraction in groups.items()]
    return np.concatenate(removed) if removed else np.zeros(0, np.int64)


def global_order(groups: list[Group], scores, min_channels: int) -> np.ndarray:
    """Every removable unit, ordered by its score over its group's mean score."""
    units, normalised = [np.zeros(0, np.int64)], [np.zeros(0)]
    for group in groups:
        mean = float(np.mean(scores[group.units])) or 1.0
        units.append(removable(group, scores, min_channels))
        normalised.append(scores[units[-1]] / mean)
    return np.concatenate(units)[np.argsort(np.concatenate(normalised), kind="stable")]


def rounded(groups, removed: np.ndarray, scores, min_channels: int, round_to: int) -> np.ndarray:
    """``removed`` with fewer of each group's weakest units, so that every group keeps a multiple of ``round_to``.

    Kernels run channels in tiles (XNNPACK's are 8 or 16 wide): a count between two tiles costs the larger.
    """
    if round_to == 1:
        return removed
    kept = []
    for group in groups:
        order = removable(group, scores, min_channels)
        keep = len(group.units) - int(np.isin(order, removed).sum())
        kept.append(order[: max(0, len(group.units) - -(-keep // round_to) * round_to)])
    return np.concatenate([np.zeros(0, np.int64), *kept])


def choose(graph: DepGraph, groups: dict[Group, float], scores: np.ndarray, *, target: str, scope: str,
           fraction: float, min_channels: int, round_to: int, stage: str) -> np.ndarray:
    """The units to remove: ``fraction`` of the channels (per group for uniform) or of the model's MACs.

    For MACs, the smallest uniform fraction, or the shortest prefix of the global order, that
    meets the budget is found by bisection (removing more never adds MACs).
    """
    order = global_order(list(groups), scores, min_channels) if scope == "global" else None

    def removed_at(x: float) -> np.ndarray:
        raw = uniform(dict.fromkeys(groups, x), scores, min_channels) if order is None else order[: int(np.ceil(x))]
        return rounded(groups, raw, scores, min_channels, round_to)

    if target == "channels":
        if order is None:
            return rounded(groups, uniform(groups, scores, min_channels), scores, min_channels, round_to)
        return removed_at(round(fraction * sum(len(group.units) for group in groups)))
    full = graph.macs(np.zeros(0, np.int64))
    low, high = 0.0, 1.0 if order is None else float(len(order))
    if graph.macs(removed_at(high)) > (1 - fraction) * full:
        reachable = 1 - graph.macs(removed_at(high)) / full
        raise ConfigError(f"{stage}: fraction: removing {fraction:.0%} of the MACs is out of reach; the chosen groups "
                          f"allow at most {reachable:.1%} (lower min_channels or round_to, or prune more layers)")
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if graph.macs(removed_at(middle)) <= (1 - fraction) * full else (middle, high)
    return removed_at(high)


def shrink(graph: DepGraph, removed: np.ndarray):
    """The smaller model: every layer's weights sliced to the channels that survive ``removed``."""
    keep = graph.kept(removed)

    def make(layer):
        call = graph.calls.get(layer.name)
        if call is None:
            return copy_layer(layer)
        config, weights = layer.get_config(), layer.get_weights()
        for index, axis, role in weight_axes(layer):
            weights[index] = np.take(weights[index], keep[call.keys[role]], axis=axis)
        width = len(keep[call.keys["out"]])
        kind = type(layer).__name__
        if kind in PRODUCERS:
            config["units" if kind == "Dense" else "filters"] = width
        elif kind == "Reshape":
            config["target_shape"] = (*call.out_shape[1:-1], width)
        return [(type(layer).from_config(config), weights)]

    return rebuild(graph.model, make)
