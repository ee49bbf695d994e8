"""BatchNormalization statistics follow the weights after a short fine-tune (AdaBN-style refresh)."""

import numpy as np
import pytest

from slimlab import data
from slimlab.kit.training import compile_and_fit, keras
from tests.support import DIGITS

pytestmark = pytest.mark.slow


def bn_net(input_shape, num_classes):
    """Conv → BatchNorm blocks with Keras' default momentum (0.99): one epoch leaves stale statistics."""
    layers = keras().layers
    x = inputs = layers.Input(input_shape)
    for width in (16, 32):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras().Model(inputs, layers.Dense(num_classes)(x))


def accuracy(model, x, y, training: bool) -> float:
    """Top-1 on the whole split at once: in training mode each BatchNorm uses the split's own statistics."""
    return float(np.mean(np.argmax(model(x, training=training).numpy(), -1) == y))


def test_one_epoch_leaves_inference_mode_within_two_points_of_training_mode(tmp_path):
    splits = data.load_spec({**DIGITS, "val_fraction": 0.4, "test_fraction": 0.1})  # 719 validation images
    keras().utils.set_random_seed(0)
    model = bn_net(splits.input_shape, splits.num_classes)
    history = compile_and_fit(model, splits, epochs=1, batch_size=32, learning_rate=3e-3, seed=0)
    model.save(tmp_path / "model.keras")
    saved = keras().models.load_model(tmp_path / "model.keras", compile=False)
    training_mode = accuracy(saved, splits.x_val, splits.y_val, training=True)
    inference_mode = accuracy(saved, splits.x_val, splits.y_val, training=False)
    refresh = history["batchnorm"]
    assert refresh["layers"] == 2 and refresh["samples"] == len(splits.x_train) and refresh["kept"] == "refreshed"
    # Before the refresh (what Keras' moving averages gave, and slimlab stored until now) the gap was large.
    assert training_mode - refresh["val_accuracy_before"] > 0.20
    assert abs(training_mode - inference_mode) <= 0.02
    assert inference_mode == pytest.approx(refresh["val_accuracy_after"], abs=1e-5)  # rounded to 5 places


def test_a_model_without_batchnorm_is_left_alone():
    splits = data.load_spec(DIGITS)
    layers = keras().layers
    model = keras().Sequential([layers.Input(splits.input_shape), layers.Flatten(), layers.Dense(splits.num_classes)])
    assert "batchnorm" not in compile_and_fit(model, splits, epochs=1, batch_size=64, learning_rate=1e-3, seed=0)


def test_a_model_cloned_around_its_own_layers_is_refreshed_in_its_own_graph():
    # The prune stages clone the model and keep its BatchNorm layers: each then belongs to two graphs.
    splits = data.load_spec(DIGITS)
    keras().utils.set_random_seed(0)
    original = bn_net(splits.input_shape, splits.num_classes)
    clone = keras().models.clone_model(original, clone_function=lambda layer: layer)
    history = compile_and_fit(clone, splits, epochs=1, batch_size=32, learning_rate=3e-3, seed=0)
    assert history["batchnorm"]["layers"] == 2
