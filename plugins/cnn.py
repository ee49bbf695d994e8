"""The default architecture: a small CNN for digit images."""

from slimlab import hookimpl


def build_cnn(input_shape, num_classes, width: int = 16, dense: int = 64):
    """Two conv/pool blocks, then a dense head. ``width`` sets the first conv's channels."""
    import tf_keras as keras

    layers = keras.layers
    return keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(dense, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="logits"),
        ],
        name="cnn",
    )


@hookimpl
def register_models(register):
    register("cnn", build_cnn)
