"""Dependency groups over a tf_keras functional graph: which channels must be pruned together.

Torch-Pruning's DepGraph idea (Fang et al., CVPR 2023), for Keras. Each channel of every tensor is
labelled with a channel *id*. Layers that own channels (Conv2D, Dense, SeparableConv2D,
Conv2DTranspose: the *producers*) give their outputs new ids; every other layer says how its
output's channels relate to its inputs':

- channel-wise layers (BatchNormalization, activations, pooling, global pooling, Dropout,
  ZeroPadding2D, scalar Rescaling and TFOpLambda arithmetic with a number) pass ids through;
  DepthwiseConv2D too, each id repeated ``depth_multiplier`` times;
- Add, Subtract, Multiply, Average, Maximum and Minimum tie their inputs' ids channel by channel
  (residuals, squeeze-excite gates; a one-channel input broadcasts and ties nothing);
- Concatenate on the channel axis lays its inputs' ids side by side (channel offsets);
- Flatten, and a Reshape whose last axis still holds whole channels, tile the ids over positions,
  so a Dense after Flatten reads each channel at every position.

Tied ids form one *unit*: a channel of every producer, consumer and BatchNormalization that must
go together. The units whose ids come from the same producers form a *group* (one conv's outputs,
a residual stream). Units that reach the model's inputs or outputs are fixed: the logits keep
every output. A layer the rules above do not cover blocks the units it reads; pruning a group
with a blocked unit is refused, naming that layer.
"""

import math
from dataclasses import dataclass

import numpy as np

from slimlab.errors import ConfigError
from slimlab.kit.training import keras

PRODUCERS = ("Conv2D", "Dense", "SeparableConv2D", "Conv2DTranspose")
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
CHANNELWISE = (
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Rescaling",
)
# TFOpLambda functions (``x + 3.0``, ``x * (1 / 6)``: MobileNetV3's hard-swish) that act element by element.
TF_ELEMENTWISE = (
    "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv", "math.divide",
    "nn.relu", "nn.relu6", "math.sigmoid", "math.tanh", "nn.silu",
)
# Activations that mix channels: pruning one changes the others.
MIXING = ("softmax", "log_softmax")
SUPPORTED = "producers (" + ", ".join(PRODUCERS) + "), DepthwiseConv2D, Concatenate, Flatten, Reshape, " + \
    ", ".join(MERGES + CHANNELWISE)


def is_graph(model) -> bool:
    """A functional or Sequential model with a known graph (not a subclassed one, nor a Sequential never built)."""
    return bool(getattr(model, "_is_graph_network", False))


def nodes(model) -> list:
    """The model's layer calls (tf_keras ``Node``s), inputs first, in an order where inputs come before use."""
    if not is_graph(model):
        raise ConfigError(f"model {model.name!r} has no functional graph (subclassed, or a Sequential without an "
                          "Input); build it with the functional or Sequential API and an Input")
    # tf_keras keeps its functional graph by depth (the outputs at 0); Model.get_config walks it the same way.
    return [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]


def out_tensors(node) -> list:
    return list(node.outputs) if isinstance(node.outputs, (list, tuple)) else [node.outputs]


def out_tensor(node):
    return out_tensors(node)[0]


CONVS = ("Conv1D", "Conv2D", "Conv3D")
DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
TRANSPOSED = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
COUNTED = (*CONVS, *DEPTHWISE, *SEPARABLE, *TRANSPOSED, "Dense")


def layer_macs(layer, in_shape, out_shape, cin: int, cout: int) -> int:
    """Multiply-accumulates of one call with ``cin`` input and ``cout`` output channels.

    One per kernel weight per output position (a transposed conv: per input position); layers
    without a kernel count 0: bias adds, BatchNormalization (converters fold it into the conv),
    activations, pooling and element-wise merges.
    """
    kind = type(layer).__name__
    taps = math.prod(getattr(layer, "kernel_size", ()))
    if kind in CONVS:
        return math.prod(out_shape[1:-1]) * taps * (cin // layer.groups) * cout
    if kind in DEPTHWISE:
        return math.prod(out_shape[1:-1]) * taps * cout
    if kind in SEPARABLE:
        middle = cin * layer.depth_multiplier
        return math.prod(out_shape[1:-1]) * (taps * middle + middle * cout)
    if kind in TRANSPOSED:
        return math.prod(in_shape[1:-1]) * taps * cin * cout
    if kind == "Dense":
        return math.prod(in_shape[1:-1]) * cin * cout
    return 0


def macs(model) -> dict | None:
    """``{"total": n, "layers": {name: n}}`` over the graph (nested models counted inside).

    None when it cannot be counted: free spatial sizes, or no functional graph.
    """
    if not is_graph(model):
        return None
    counts = {}
    for node in nodes(model):
        layer = node.layer
        if isinstance(layer, keras().Model):
            inner = macs(layer)
            if inner is None:
                return None
            counts.update({f"{layer.name}/{name}": n for name, n in inner["layers"].items()})
        elif type(layer).__name__ in COUNTED:
            in_shape, out_shape = tuple(node.keras_inputs[0].shape), tuple(out_tensor(node).shape)
            if None in in_shape[1:] + out_shape[1:]:
                return None
            n = layer_macs(layer, in_shape, out_shape, in_shape[-1], out_shape[-1])
            counts[layer.name] = counts.get(layer.name, 0) + int(n)
    return {"total": sum(counts.values()), "layers": counts}


def logits_layers(model) -> set[str]:
    """The producers whose outputs are the model's outputs, looking back through layers that own no channels."""
    made_by = {id(out_tensor(node)): node for node in nodes(model)}
    found = set()
    for tensor in model.outputs:
        node = made_by[id(tensor)]
        while type(node.layer).__name__ not in PRODUCERS and len(node.keras_inputs) == 1:
            node = made_by[id(node.keras_inputs[0])]
        found.add(node.layer.name)
    return found


def copy_layer(layer) -> list:
    """A fresh layer with the same config and weights: ``rebuild``'s default."""
    return [(type(layer).from_config(layer.get_config()), layer.get_weights())]


def rebuild(model, make=copy_layer):
    """A new functional model of the same graph; ``make(layer)`` gives the ``[(layer, weights)]`` chain for each layer.

    A chain of two (lowrank.svd's factors) is called one after the other. Shared layers stay shared.
    """
    import tensorflow as tf

    k = keras()
    new, made = {}, {}
    for node in nodes(model):
        layer = node.layer
        if node.is_input:
            tensor = out_tensor(node)
            new[id(tensor)] = k.Input(batch_size=tensor.shape[0], shape=tensor.shape[1:], dtype=tensor.dtype,
                                      name=layer.name)
            continue
        if layer.name not in made:
            made[layer.name] = make(layer)
        chain = made[layer.name]
        args, kwargs = tf.nest.map_structure(lambda v: new.get(id(v), v), (node.call_args, node.call_kwargs))
        out = chain[0][0](*args, **kwargs)
        for follower, _ in chain[1:]:
            out = follower(out)
        for old, fresh in zip(out_tensors(node), tf.nest.flatten(out)):
            new[id(old)] = fresh
    ends = [[new[id(t)] for t in model.inputs], [new[id(t)] for t in model.outputs]]
    inputs, outputs = (group[0] if len(group) == 1 else group for group in ends)
    rebuilt = k.Model(inputs, outputs, name=model.name)
    for chain in made.values():
        for layer, weights in chain:
            layer.set_weights(weights)
    return rebuilt


@dataclass(frozen=True)
class Call:
    """A layer call the pruner rewrites: its tensors by role (``in``, ``out``; ``mid`` inside a separable conv)."""

    layer: object
    keys: dict
    in_shape: tuple
    out_shape: tuple


@dataclass(eq=False)  # hashed by identity: groups key dicts
class Group:
    """Units that come from the same producers: pruned together, ranked against each other."""

    layers: tuple[str, ...]   # the producers, in graph order
    units: np.ndarray         # unit labels (root ids), in the first producer's channel order
    blocked_by: str | None    # a layer that reads these channels and is not understood

    @property
    def name(self) -> str:
        return self.layers[0]


class DepGraph:
    """The dependency groups of ``model``; ``stage`` prefixes every error."""

    def __init__(self, model, stage: str):
        self.model, self.stage = model, stage
        self.ids: dict = {}       # tensor key -> channel id of each index of its last axis
        self.calls: dict[str, Call] = {}  # layers with weights to slice or a width to set, by name
        self._parent: list[int] = []
        self._owner: list[str | None] = []   # the producer that made each id (None: an input or opaque)
        self._fixed: list[np.ndarray] = []  # ids that must stay: inputs, outputs, what opaque layers make
        blocked, seen = {}, set()
        for node in nodes(model):
            layer = node.layer
            if layer.name in seen:
                raise ConfigError(f"{stage}: layer {layer.name!r} is called more than once; "
                                  "shared layers cannot be pruned")
            seen.add(layer.name)
            out = id(out_tensor(node))
            if node.is_input:
                self.ids[out] = self._new(out_tensor(node).shape[-1], None)
                self._fixed.append(self.ids[out])
                continue
            reason = self._add(node, layer, out)
            if reason is not None:
                for tensor in node.keras_inputs:
                    for i in self.ids[id(tensor)]:
                        blocked.setdefault(i, f"{layer.name!r} ({type(layer).__name__}: {reason})")
                for tensor in out_tensors(node):  # what it makes is unknown: fixed
                    self.ids[id(tensor)] = self._new(tensor.shape[-1], None)
                    self._fixed.append(self.ids[id(tensor)])
        self._fixed += [self.ids[id(t)] for t in model.outputs]
        self.roots = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        self._groups(np.unique(self.roots[np.concatenate(self._fixed)]), blocked)

    # --- building ---------------------------------------------------------------------

    def _new(self, count: int, owner: str | None) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        self._owner.extend([owner] * count)
        return np.arange(start, start + count)

    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def _tie(self, a: np.ndarray, b: np.ndarray) -> None:
        for i, j in zip(a.tolist(), b.tolist()):
            ri, rj = self._find(i), self._find(j)
            if ri != rj:
                self._parent[max(ri, rj)] = min(ri, rj)

    def _add(self, node, layer, out) -> str | None:
        """Label the output's channels; a reason string if the layer is not understood."""
        kind = type(layer).__name__
        inputs = [self.ids[id(t)] for t in node.keras_inputs]
        in_shape, out_shape = tuple(node.keras_inputs[0].shape), tuple(out_tensor(node).shape)
        if isinstance(layer, keras().Model):
            return "a nested model; build the network as one functional model"
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return "channels_first"
        problem = self._problem(node, layer, kind, in_shape)
        if problem:
            return problem
        keys = {"in": id(node.keras_inputs[0]), "out": out}
        if kind in PRODUCERS:
            self.ids[out] = self._new(out_shape[-1], layer.name)
            if getattr(getattr(layer, "activation", None), "__name__", "") in MIXING:
                self._fixed.append(self.ids[out])  # its outputs are tied by the softmax; its inputs are not
            if kind == "SeparableConv2D":
                keys["mid"] = ("mid", layer.name)
                self.ids[keys["mid"]] = np.repeat(inputs[0], layer.depth_multiplier)
        elif kind == "DepthwiseConv2D":
            self.ids[out] = np.repeat(inputs[0], layer.depth_multiplier)
        elif kind in CHANNELWISE or (kind == "TFOpLambda" and len(inputs) == 1):
            self.ids[out] = inputs[0]
        elif kind == "Concatenate" and layer.axis in (-1, len(out_shape) - 1):
            self.ids[out] = np.concatenate(inputs)
        elif kind in (*MERGES, "TFOpLambda", "Concatenate"):  # Concatenate along another axis ties like Add
            self.ids[out] = self._merge(inputs, out_shape[-1])
        elif kind in ("Flatten", "Reshape"):
            tiled = self._tile(inputs[0], in_shape, out_shape)
            if tiled is None:
                return "the channel axis does not survive the reshape"
            self.ids[out] = tiled
        else:
            return "no rule for this layer"
        if kind in PRODUCERS or kind in ("DepthwiseConv2D", "BatchNormalization", "Reshape"):
            self.calls[layer.name] = Call(layer, keys, in_shape, out_shape)
        return None

    def _problem(self, node, layer, kind, in_shape) -> str | None:
        """Why a layer of a known kind still cannot be pruned through, if it cannot."""
        config = layer.get_config()
        if kind in PRODUCERS and getattr(layer, "groups", 1) != 1:
            return "grouped convolution"
        if kind == "BatchNormalization" and list(layer.axis) != [len(in_shape) - 1]:
            return "normalises an axis other than the last"
        if kind == "Activation" and config["activation"] in MIXING:
            return f"{config['activation']} mixes channels"
        if kind == "Rescaling" and not all(np.ndim(config[key]) == 0 for key in ("scale", "offset")):
            return "per-channel scale or offset"
        if kind == "TFOpLambda":
            import tensorflow as tf

            kwargs = {key: value for key, value in node.call_kwargs.items() if key != "name"}
            constants = [v for v in tf.nest.flatten((node.call_args, kwargs)) if id(v) not in self.ids]
            if config["function"] not in TF_ELEMENTWISE:
                return f"tf.{config['function']} is not an element-wise op"
            if not all(isinstance(v, (int, float)) for v in constants):
                return "takes a constant that is not a single number"
        return None

    def _merge(self, inputs: list[np.ndarray], width: int) -> np.ndarray:
        """Tie the inputs channel by channel; a one-channel input broadcasts."""
        wide = [ids for ids in inputs if len(ids) == width]
        for other in wide[1:]:
            self._tie(wide[0], other)
        return wide[0]

    @staticmethod
    def _tile(ids: np.ndarray, in_shape: tuple, out_shape: tuple) -> np.ndarray | None:
        """The ids along a reshaped tensor's last axis, if every row of it carries the same ones."""
        if None in in_shape[1:] + out_shape[1:]:
            return None
        flat = np.tile(ids, math.prod(in_shape[1:-1]))
        rows = flat.reshape(-1, out_shape[-1])
        return rows[0] if (rows == rows[0]).all() else None

    def _groups(self, fixed_roots: np.ndarray, blocked: dict) -> None:
        """Units (roots) by their producers; fixed units belong to no group."""
        order = {name: i for i, name in enumerate(self.calls)}
        producers: dict[int, set] = {}
        for i, owner in enumerate(self._owner):
            if owner is not None:
                producers.setdefault(int(self.roots[i]), set()).add(owner)
        by_key: dict[tuple, list[int]] = {}
        for root in sorted(set(producers) - set(fixed_roots.tolist())):  # ascending: the first producer's order
            by_key.setdefault(tuple(sorted(producers[root], key=order.get)), []).append(root)
        blocking = {int(self.roots[i]): why for i, why in blocked.items()}
        self.groups = [
            Group(key, np.array(roots), next((blocking[r] for r in roots if r in blocking), None))
            for key, roots in sorted(by_key.items(), key=lambda item: order[item[0][0]])
        ]

    # --- pruned sizes ----------------------------------------------------------------

    def kept(self, removed: np.ndarray) -> dict:
        """For every labelled tensor, the indices of its last axis that survive removing the ``removed`` units."""
        dead = np.isin(self.roots, removed)
        return {key: np.flatnonzero(~dead[ids]) for key, ids in self.ids.items()}

    def macs(self, removed: np.ndarray) -> int:
        """The model's MACs once the ``removed`` units are gone."""
        alive = ~np.isin(self.roots, removed)
        total = 0
        for call in self.calls.values():
            count = {role: int(np.count_nonzero(alive[self.ids[key]])) for role, key in call.keys.items()}
            total += layer_macs(call.layer, call.in_shape, call.out_shape, count["in"], count["out"])
        return total
