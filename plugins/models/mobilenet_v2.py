"""mobilenet_v2: tf_keras's MobileNetV2 (inverted residuals, ReLU6), random weights, with a dense head.

Nothing is downloaded (``weights=None``). The input must be at least 32x32 with any number of
channels: feed MNIST as ``dataset: {name: mnist, params: {size: 32, channels: 3}}``.
"""

from typing import Annotated

from pydantic import Field

from slimlab import hookimpl
from slimlab.kit.training import Architecture, keras

Alpha = Annotated[float, Field(gt=0, le=2, description="width multiplier of every layer")]


def fast_batchnorm(model, momentum: float = 0.9):
    """Set every BatchNormalization's momentum to ``momentum``; returns the model.

    keras.applications use 0.999, tuned for ImageNet's many steps: on a few hundred steps the
    moving statistics would stay near their initial values and inference accuracy near chance.
    """
    for layer in model.layers:
        if isinstance(layer, keras().layers.BatchNormalization):
            layer.momentum = momentum
    return model


def build_mobilenet_v2(input_shape, num_classes, alpha: Alpha = 1.0):
    base = keras().applications.MobileNetV2(input_shape=input_shape, alpha=alpha, include_top=False,
                                            weights=None, pooling="avg")
    logits = keras().layers.Dense(num_classes, name="logits")(base.output)
    return fast_batchnorm(keras().Model(base.input, logits, name=f"mobilenet_v2_{alpha:g}"))


@hookimpl
def register_models(register):
    register(Architecture("mobilenet_v2", build_mobilenet_v2))
