"""prune.structured: the surgery is exact, the layers really shrink, and bad graphs or params are clear errors."""

import numpy as np
import pytest

from slimlab import registry
from slimlab.errors import ConfigError
from slimlab.kit.surgery import shrink_channels
from slimlab.stages import run_step
from tests.support import DIGITS


def keras():
    import tf_keras

    return tf_keras


def randomise_batchnorm(model, seed=0):
    """Give every BatchNormalization non-trivial statistics, so slicing them wrongly shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras().layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, var.shape)])


def zero_removed_channels(model, kept: dict) -> "keras().Model":
    """A copy of ``model`` whose removed channels output exactly 0 up to the next Conv2D/Dense.

    The producer's kernel and bias slices become 0; a BatchNormalization on the
    way gets gamma = beta = 0 there (so it outputs 0 whatever its statistics);
    a DepthwiseConv2D on the way gets those channels' kernel and bias zeroed.
    ReLU and pooling keep 0 at 0.
    """
    layers_ = keras().layers
    reference = keras().models.clone_model(model)
    reference.set_weights(model.get_weights())
    chain = [layer for layer in reference.layers if not isinstance(layer, layers_.InputLayer)]
    for index, layer in enumerate(chain):
        if layer.name not in kept:
            continue
        removed = np.setdiff1d(np.arange(layer.kernel.shape[-1]), kept[layer.name])
        layer.set_weights([np.where(np.isin(np.arange(w.shape[-1]), removed), 0, w) for w in layer.get_weights()])
        for follower in chain[index + 1:]:
            if isinstance(follower, (layers_.Conv2D, layers_.Dense)):
                break
            if isinstance(follower, layers_.BatchNormalization):
                gamma, beta, mean, var = follower.get_weights()
                gamma[removed] = beta[removed] = 0
                follower.set_weights([gamma, beta, mean, var])
            if isinstance(follower, layers_.DepthwiseConv2D):
                kernel, bias = follower.get_weights()
                kernel[:, :, removed, :] = 0
                removed = (removed[:, None] * follower.depth_multiplier + np.arange(follower.depth_multiplier)).ravel()
                bias[removed] = 0
                follower.set_weights([kernel, bias])
    return reference


def assert_surgery_is_exact(model, keep, x):
    pruned, kept = shrink_channels(model, keep)
    assert {name: len(idx) for name, idx in kept.items()} == keep
    reference = zero_removed_channels(model, kept)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # The removed channels mattered, so the comparison above is not vacuous.
    assert not np.allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-3)
    assert pruned.count_params() < model.count_params()
    return pruned


def test_surgery_with_batchnorm_and_flatten_matches_zeroed_original():
    layers_ = keras().layers
    keras().utils.set_random_seed(1)
    model = keras().Sequential([
        layers_.Input((8, 8, 3)),
        layers_.Conv2D(8, 3, padding="same", name="conv1"), layers_.BatchNormalization(name="bn1"), layers_.ReLU(),
        layers_.MaxPooling2D(),
        layers_.Conv2D(6, 3, padding="same", activation="relu", name="conv2"), layers_.BatchNormalization(name="bn2"),
        layers_.Flatten(),
        layers_.Dense(12, activation="relu", name="fc1"), layers_.Dropout(0.5),
        layers_.Dense(5, name="logits"),
    ])
    randomise_batchnorm(model)
    x = np.random.default_rng(2).normal(size=(16, 8, 8, 3)).astype(np.float32)
    pruned = assert_surgery_is_exact(model, {"conv1": 4, "conv2": 3, "fc1": 5}, x)
    assert pruned.get_layer("conv1").kernel.shape == (3, 3, 3, 4)
    assert [w.shape for w in pruned.get_layer("bn1").get_weights()] == [(4,)] * 4
    assert pruned.get_layer("conv2").kernel.shape == (3, 3, 4, 3)
    assert pruned.get_layer("fc1").kernel.shape == (4 * 4 * 3, 5)
    assert pruned.get_layer("logits").kernel.shape == (5, 5)


def test_surgery_with_depthwise_block_and_global_pooling_matches_zeroed_original():
    layers_ = keras().layers
    keras().utils.set_random_seed(3)
    inputs = keras().Input((8, 8, 2))
    x = layers_.Conv2D(8, 3, padding="same", name="expand")(inputs)
    x = layers_.BatchNormalization(name="bn_expand")(x)
    x = layers_.ReLU()(x)
    x = layers_.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers_.BatchNormalization(name="bn_dw")(x)
    x = layers_.ReLU()(x)
    x = layers_.Conv2D(10, 1, activation="relu", name="project")(x)
    x = layers_.GlobalAveragePooling2D()(x)
    outputs = layers_.Dense(4, name="logits")(x)
    model = keras().Model(inputs, outputs)
    randomise_batchnorm(model)
    x = np.random.default_rng(4).normal(size=(16, 8, 8, 2)).astype(np.float32)
    pruned = assert_surgery_is_exact(model, {"expand": 5, "project": 4}, x)
    assert pruned.get_layer("dw").depthwise_kernel.shape == (3, 3, 5, 2)
    assert pruned.get_layer("dw").bias.shape == (10,)
    assert pruned.get_layer("bn_dw").gamma.shape == (10,)
    assert pruned.get_layer("project").kernel.shape == (1, 1, 10, 4)
    assert pruned.get_layer("logits").kernel.shape == (4, 4)


def test_residual_graph_is_rejected_naming_the_layer():
    layers_ = keras().layers
    inputs = keras().Input((8, 8, 4))
    x = layers_.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers_.Add(name="skip")([inputs, x])
    outputs = layers_.Dense(3, name="logits")(layers_.Flatten()(x))
    with pytest.raises(ConfigError, match=r"cannot rewrite layer 'skip' \(Add, 2 input\(s\)\)"):
        shrink_channels(keras().Model(inputs, outputs), {"conv": 2})


def test_unsupported_layer_after_pruned_channels_is_rejected_naming_it():
    layers_ = keras().layers
    model = keras().Sequential([layers_.Input((6,)), layers_.Dense(8, name="fc"),
                                layers_.LayerNormalization(name="norm"), layers_.Dense(3, name="logits")])
    with pytest.raises(ConfigError, match=r"cannot rewrite layer 'norm' \(LayerNormalization\)"):
        shrink_channels(model, {"fc": 4})


@pytest.mark.parametrize("params, named", [
    ({"fraction": 1.0}, "fraction"),
    ({"fraction": -0.1}, "fraction"),
    ({"per_layer": {"conv1": 1.5}}, "per_layer"),
    ({"layers": ["conv1"], "per_layer": {"fc1": 0.3}}, "per_layer"),
    ({"min_channels": 0}, "min_channels"),
    ({"epochs": -1}, "epochs"),
])
def test_bad_params_name_the_param(params, named):
    with pytest.raises(ConfigError, match=rf"'prune.structured': {named}"):
        registry.stages()["prune.structured"].validate(params, "recipes.r[1]")


def structured(tmp_path, source, params, name="structured"):
    return run_step({"stage": "prune.structured", "params": params, "dataset": DIGITS}, source.sidecar, tmp_path / name / "artifact.json")


def test_logits_or_unknown_overrides_are_clear_errors(tiny_artifacts, tmp_path):
    with pytest.raises(ConfigError, match=r"layers: 'logits' produces the model's outputs"):
        structured(tmp_path, tiny_artifacts["keras"], {"layers": ["conv1", "logits"]})
    with pytest.raises(ConfigError, match=r"per_layer: logits not among the pruned layers"):
        structured(tmp_path, tiny_artifacts["keras"], {"per_layer": {"logits": 0.5}})


@pytest.mark.slow
def test_halves_the_cnn_and_chains_to_int8(tiny_artifacts, tmp_path):
    source = tiny_artifacts["keras"]  # cnn width 8, dense 32 on 8x8 digits
    pruned = structured(tmp_path, source, {"fraction": 0.5, "min_channels": 2, "per_layer": {"fc1": 0.25}, "epochs": 3})
    model = pruned.model
    assert model.get_layer("conv1").kernel.shape == (3, 3, 1, 4)
    assert model.get_layer("conv2").kernel.shape == (3, 3, 4, 8)
    assert model.get_layer("fc1").kernel.shape == (2 * 2 * 8, 24)
    assert model.get_layer("logits").kernel.shape == (24, 10)
    expected = (9 * 4 + 4) + (9 * 4 * 8 + 8) + (32 * 24 + 24) + (24 * 10 + 10)
    metrics = pruned.info.metrics
    assert pruned.info.params.count == metrics["params_after"] == expected
    assert metrics["params_before"] == source.info.params.count
    assert metrics["channels"] == {"conv1": {"before": 8, "kept": 4}, "conv2": {"before": 16, "kept": 8},
                                   "fc1": {"before": 32, "kept": 24}}
    assert pruned.info.accuracy["test"] >= source.info.accuracy["test"] - 0.1

    int8 = run_step({"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": DIGITS},
                    pruned.sidecar, tmp_path / "int8" / "artifact.json")
    assert int8.info.params.count == expected
    assert int8.info.accuracy["test"] >= pruned.info.accuracy["test"] - 0.05
