"""Dependency groups: for every grouping pattern, the pruned model computes what the original computes
with the same channels zeroed; real MobileNets prune, convert and run; unknown ops are refused by name."""

import numpy as np
import pytest

from slimlab.errors import ConfigError
from slimlab.kit.depgraph import DepGraph, macs
from slimlab.kit.depgraph_prune import choose, l2_importance, shrink, unit_scores


def keras():
    import tf_keras

    return tf_keras


def layers():
    return keras().layers


def randomise(model, seed=0):
    """Non-trivial BatchNormalization statistics and biases, so slicing them wrongly shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([w + rng.normal(0, 0.3, w.shape) if w.ndim == 1 else w for w in layer.get_weights()])
        if isinstance(layer, layers().BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, mean, rng.uniform(0.5, 2.0, var.shape)])


def prune_half(model):
    """Half of every group's channels by L2 norm: the graph, the pruned model and the removed units."""
    graph = DepGraph(model, "test")
    scores, _ = unit_scores(graph, l2_importance(model))
    removed = choose(graph, dict.fromkeys(graph.groups, 0.5), scores, target="channels", scope="uniform",
                     fraction=0.5, min_channels=1, round_to=1, stage="test")
    return graph, shrink(graph, removed), removed


def zeroed(model, graph, removed):
    """A copy of ``model`` whose removed channels are 0 wherever they are read.

    Producers get those output slices (kernel and bias) zeroed, BatchNormalization gamma = beta = 0
    (so it outputs 0 whatever its statistics), DepthwiseConv2D those kernels and biases.
    """
    reference = keras().models.clone_model(model)
    reference.set_weights(model.get_weights())
    kept = graph.kept(removed)
    for name, call in graph.calls.items():
        layer = reference.get_layer(name)
        weights = layer.get_weights()
        gone = {role: np.setdiff1d(np.arange(len(graph.ids[key])), kept[key]) for role, key in call.keys.items()}
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense", "SeparableConv2D"):
            for w in weights[-2:] if layer.use_bias else weights[-1:]:
                w[..., gone["out"]] = 0
        elif kind == "BatchNormalization":
            weights[0][gone["in"]] = weights[1][gone["in"]] = 0
        elif kind == "DepthwiseConv2D":
            weights[0][:, :, gone["in"]] = 0
            weights[1][gone["out"]] = 0
        layer.set_weights(weights)
    return reference


def assert_exact(model, shape, seed=1):
    """Prune half of every group; the result matches the zeroed original, and zeroing mattered."""
    randomise(model)
    graph, pruned, removed = prune_half(model)
    x = np.random.default_rng(seed).normal(size=(8, *shape)).astype(np.float32)
    expected = zeroed(model, graph, removed)(x).numpy()
    np.testing.assert_allclose(pruned(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected, model(x).numpy(), atol=1e-3)
    assert macs(pruned)["total"] == graph.macs(removed) < macs(model)["total"]
    return graph, pruned


def conv_bn(x, channels, name, kernel=3, relu=True):
    x = layers().Conv2D(channels, kernel, padding="same", name=name)(x)
    x = layers().BatchNormalization(name=f"{name}_bn")(x)
    return layers().ReLU()(x) if relu else x


def head(inputs, x, classes=3):
    x = layers().GlobalAveragePooling2D()(x)
    return keras().Model(inputs, layers().Dense(classes, name="logits")(x))


def test_residual_add_ties_both_branches():
    inputs = keras().Input((6, 6, 3))
    stem = conv_bn(inputs, 8, "stem")
    branch = conv_bn(conv_bn(stem, 6, "inner"), 8, "outer", relu=False)
    graph, pruned = assert_exact(head(inputs, layers().Add()([stem, branch])), (6, 6, 3))
    assert [group.layers for group in graph.groups] == [("stem", "outer"), ("inner",)]
    assert pruned.get_layer("stem").kernel.shape[-1] == pruned.get_layer("outer").kernel.shape[-1] == 4
    assert pruned.get_layer("logits").kernel.shape == (4, 3)


def test_two_residual_blocks_share_one_group():
    inputs = keras().Input((6, 6, 3))
    x = conv_bn(inputs, 8, "stem")
    for block in (1, 2):
        y = conv_bn(conv_bn(x, 4, f"b{block}_a"), 8, f"b{block}_b", relu=False)
        x = layers().ReLU()(layers().Add()([x, y]))
    graph, pruned = assert_exact(head(inputs, x), (6, 6, 3))
    assert graph.groups[0].layers == ("stem", "b1_b", "b2_b")
    assert {pruned.get_layer(name).kernel.shape[-1] for name in ("stem", "b1_b", "b2_b")} == {4}
    assert pruned.get_layer("b2_a").kernel.shape == (3, 3, 4, 2)


def test_concatenate_keeps_each_inputs_offset():
    inputs = keras().Input((6, 6, 2))
    left, right = conv_bn(inputs, 6, "left"), conv_bn(inputs, 10, "right")
    x = layers().BatchNormalization(name="joint_bn")(layers().Concatenate()([left, right]))
    graph, pruned = assert_exact(head(inputs, conv_bn(x, 4, "mix", kernel=1)), (6, 6, 2))
    assert {group.layers for group in graph.groups} == {("left",), ("right",), ("mix",)}
    assert pruned.get_layer("mix").kernel.shape == (1, 1, 3 + 5, 2)
    assert pruned.get_layer("joint_bn").gamma.shape == (8,)


def test_squeeze_excite_gate_broadcast_through_reshape():
    inputs = keras().Input((6, 6, 3))
    x = conv_bn(inputs, 8, "features")
    gate = layers().GlobalAveragePooling2D()(x)
    gate = layers().Dense(4, activation="relu", name="squeeze")(gate)
    gate = layers().Dense(8, activation="sigmoid", name="excite")(gate)
    gate = layers().Reshape((1, 1, 8), name="gate")(gate)
    graph, pruned = assert_exact(head(inputs, layers().Multiply()([x, gate])), (6, 6, 3))
    assert [group.layers for group in graph.groups] == [("features", "excite"), ("squeeze",)]
    assert pruned.get_layer("excite").kernel.shape == (2, 4)
    assert pruned.get_layer("gate").output_shape == (None, 1, 1, 4)


def test_depthwise_and_separable_follow_their_input():
    inputs = keras().Input((6, 6, 3))
    x = conv_bn(inputs, 6, "expand", kernel=1)
    x = layers().DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers().BatchNormalization(name="dw_bn")(x)
    x = layers().SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep")(layers().ReLU()(x))
    graph, pruned = assert_exact(head(inputs, x), (6, 6, 3))
    assert [group.layers for group in graph.groups] == [("expand",), ("sep",)]
    assert pruned.get_layer("dw").depthwise_kernel.shape == (3, 3, 3, 2)
    assert pruned.get_layer("dw_bn").gamma.shape == (6,)
    assert pruned.get_layer("sep").depthwise_kernel.shape == (3, 3, 6, 2)
    assert pruned.get_layer("sep").pointwise_kernel.shape == (1, 1, 12, 4)


def test_flatten_dense_fan_in_drops_every_position_of_a_channel():
    model = keras().Sequential([
        layers().Input((6, 6, 2)),
        layers().Conv2D(6, 3, padding="same", name="conv"), layers().BatchNormalization(name="bn"), layers().ReLU(),
        layers().MaxPooling2D(), layers().ZeroPadding2D(1), layers().Flatten(),
        layers().Dense(8, activation="relu", name="fc1"), layers().Dropout(0.5), layers().Dense(3, name="logits"),
    ])
    _, pruned = assert_exact(model, (6, 6, 2))
    assert pruned.get_layer("fc1").kernel.shape == (5 * 5 * 3, 4)
    assert pruned.get_layer("logits").kernel.shape == (4, 3)


def test_inputs_and_outputs_are_fixed():
    inputs = keras().Input((6, 6, 4))
    x = layers().Add()([inputs, conv_bn(inputs, 4, "tied_to_input")])
    model = keras().Model(inputs, layers().Conv2D(5, 1, name="logits")(x))
    assert DepGraph(model, "test").groups == []


def test_unknown_op_is_refused_by_name_and_other_groups_still_prune():
    from slimlab.plugins.stages.prune_structured import StructuredParams, selected_groups

    inputs = keras().Input((6, 6, 3))
    x = layers().LayerNormalization(name="norm")(conv_bn(inputs, 8, "conv1"))
    model = head(inputs, conv_bn(x, 8, "conv2"))
    graph = DepGraph(model, "prune.structured")
    with pytest.raises(ConfigError, match=r"cannot prune through layer 'norm' \(LayerNormalization: no rule"):
        selected_groups(graph, StructuredParams())
    assert [group.layers for group in selected_groups(graph, StructuredParams(layers=["conv2"]))] == [("conv2",)]


def test_shared_layers_are_refused_by_name():
    inputs = keras().Input((4,))
    shared = layers().Dense(4, name="shared")
    model = keras().Model(inputs, layers().Dense(2)(shared(shared(inputs))))
    with pytest.raises(ConfigError, match="layer 'shared' is called more than once"):
        DepGraph(model, "test")


def test_macs_target_is_met_uniformly_and_globally():
    inputs = keras().Input((8, 8, 3))
    x = conv_bn(inputs, 16, "stem")
    x = layers().Add()([x, conv_bn(conv_bn(x, 32, "wide"), 16, "narrow", relu=False)])
    model = head(inputs, x)
    graph = DepGraph(model, "test")
    scores, _ = unit_scores(graph, l2_importance(model))
    full = graph.macs(np.zeros(0, np.int64))
    for scope in ("uniform", "global"):
        removed = choose(graph, dict.fromkeys(graph.groups, 0.4), scores, target="macs", scope=scope,
                         fraction=0.4, min_channels=2, round_to=1, stage="test")
        assert 0.4 <= 1 - graph.macs(removed) / full < 0.5, scope
    removed = choose(graph, dict.fromkeys(graph.groups, 0.4), scores, target="macs", scope="global",
                     fraction=0.4, min_channels=2, round_to=4, stage="test")
    kept = graph.kept(removed)
    widths = {len(kept[graph.calls[name].keys["out"]]) for group in graph.groups for name in group.layers}
    assert {width % 4 for width in widths} == {0} and graph.macs(removed) <= 0.6 * full
    with pytest.raises(ConfigError, match="removing 99% of the MACs is out of reach"):
        choose(graph, dict.fromkeys(graph.groups, 0.99), scores, target="macs", scope="uniform",
               fraction=0.99, min_channels=2, round_to=1, stage="test")


@pytest.mark.slow
@pytest.mark.parametrize("name, params", [("mobilenet_v2", {"alpha": 0.35}), ("mobilenet_v3_small", {"alpha": 0.5})])
def test_mobilenets_prune_convert_and_run(name, params):
    from slimlab.kit.export import keras_to_tflite
    from slimlab.plugins.formats.tflite import TfliteFormat
    from slimlab.registry import models

    keras().utils.set_random_seed(0)
    model = models()[name].build((32, 32, 3), 10, **params)
    graph = DepGraph(model, "test")
    scores, _ = unit_scores(graph, l2_importance(model))
    removed = choose(graph, dict.fromkeys(graph.groups, 0.4), scores, target="macs", scope="global",
                     fraction=0.4, min_channels=4, round_to=8, stage="test")
    pruned = shrink(graph, removed)
    tflite = TfliteFormat()
    flat = keras_to_tflite(pruned)
    assert tflite.macs(flat)["total"] == macs(pruned)["total"] <= 0.6 * macs(model)["total"]
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    (logits,) = tflite.predict(flat, x).values()
    np.testing.assert_allclose(logits, pruned(x).numpy(), rtol=1e-3, atol=1e-3)
