"""MACs: the Keras and TFLite counts match a hand count, and every sidecar carries them."""

import pytest


def hand_counted_model():
    import tf_keras as keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Add()([x, layers.ReLU()(x)])
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    x = layers.SeparableConv2D(6, 3, name="sep")(x)
    x = layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="up")(x)
    x = layers.Dense(5, name="fc")(layers.Flatten()(x))
    return keras.Model(inputs, x)


# One MAC per kernel weight per output position (a transposed conv: per input position).
HAND = {
    "conv": 8 * 8 * (3 * 3 * 3) * 4,        # 8x8 outputs, 3x3x3 taps, 4 filters
    "dw": 4 * 4 * (3 * 3) * 4,              # stride 2: 4x4 outputs, 3x3 taps, 4 channels
    "sep": 2 * 2 * (3 * 3 * 4) + 2 * 2 * 4 * 6,  # valid: 2x2 outputs; depthwise, then pointwise 4 -> 6
    "up": 2 * 2 * (3 * 3) * 6 * 2,          # 2x2 inputs, 3x3 taps, 6 -> 2 channels
    "fc": (4 * 4 * 2) * 5,                  # flatten 4x4x2 -> 5
}


def test_keras_and_tflite_counts_match_the_hand_count():
    from slimlab import formats
    from slimlab.kit.export import keras_to_tflite

    model = hand_counted_model()
    counted = formats.get("keras").macs(model)
    assert counted == {"total": sum(HAND.values()), "layers": HAND}
    tflite = formats.get("tflite").macs(keras_to_tflite(model))
    assert tflite["total"] == sum(HAND.values())
    # TFLite runs the separable conv as two ops: depthwise, then a 1x1 conv.
    split = {**HAND, "sep": 2 * 2 * (3 * 3 * 4), "sep_pointwise": 2 * 2 * 4 * 6}
    assert sorted(tflite["layers"].values()) == sorted(split.values())


def test_free_spatial_sizes_and_subclassed_models_have_no_count():
    import tf_keras as keras

    from slimlab import formats

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    inputs = keras.Input((None, None, 3))
    free = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    assert formats.get("keras").macs(free) is None
    assert formats.get("keras").macs(Subclassed()) is None


@pytest.mark.slow
def test_every_sidecar_of_the_tiny_model_carries_the_same_macs(tiny_artifacts):
    # cnn width 8, dense 32 on 8x8 digits: conv1 8x8·9·1·8, conv2 4x4·9·8·16, fc1 64·32, logits 32·10.
    expected = 8 * 8 * 9 * 8 + 4 * 4 * 9 * 8 * 16 + 64 * 32 + 32 * 10
    assert {name: artifact.info.macs["total"] for name, artifact in tiny_artifacts.items()} == \
        dict.fromkeys(tiny_artifacts, expected)
