"""cnn: the default architecture, a small CNN for digit images, and its structural variants.

The variants swap one design choice each, so a single run can compare them:
- ``cnn``: two 3×3 conv/pool blocks and a dense head;
- ``cnn_dws``: the second conv is depthwise-separable (3×3 depthwise + 1×1 pointwise);
- ``cnn_factorized``: each 3×3 conv becomes a 3×1 conv followed by a 1×3 conv;
- ``cnn_gap``: a third conv and global average pooling replace the flatten + dense head.
"""

from functools import partial
from typing import Annotated, Literal

from pydantic import Field

from slimlab import hookimpl
from slimlab.kit.training import Architecture, keras


def build_cnn(
    input_shape,
    num_classes,
    width: Annotated[int, Field(ge=1, le=4096)] = 16,
    dense: Annotated[int, Field(ge=1, le=65536)] = 64,
    conv: Literal["standard", "separable", "factorized"] = "standard",
    head: Literal["dense", "gap"] = "dense",
):
    """``width`` sets the first conv's channels (the second has twice as many); ``dense`` the hidden head units."""
    layers = keras().layers

    def conv_block(channels, name):
        if conv == "factorized":
            return [layers.Conv2D(channels, (3, 1), padding="same", name=f"{name}_3x1"),
                    layers.Conv2D(channels, (1, 3), padding="same", activation="relu", name=f"{name}_1x3")]
        if conv == "separable" and name != "conv1":  # a depthwise conv over 1 input channel would learn nothing
            return [layers.DepthwiseConv2D(3, padding="same", activation="relu", name=f"{name}_dw"),
                    layers.Conv2D(channels, 1, activation="relu", name=f"{name}_pw")]
        return [layers.Conv2D(channels, 3, padding="same", activation="relu", name=name)]

    if head == "gap":
        # Averaging away all position needs features that no longer depend on it: one more conv first.
        top = [*conv_block(4 * width, "conv3"), layers.GlobalAveragePooling2D(name="gap")]
    else:
        top = [layers.Flatten(name="flatten"), layers.Dense(dense, activation="relu", name="fc1")]
    return keras().Sequential(
        [
            layers.Input(input_shape),
            *conv_block(width, "conv1"),
            layers.MaxPooling2D(name="pool1"),
            *conv_block(2 * width, "conv2"),
            layers.MaxPooling2D(name="pool2"),
            *top,
            layers.Dense(num_classes, name="logits"),
        ],
        name=f"cnn_{conv}_{head}",
    )


@hookimpl
def register_models(register):
    register(Architecture("cnn", build_cnn))
    register(Architecture("cnn_dws", partial(build_cnn, conv="separable")))
    register(Architecture("cnn_factorized", partial(build_cnn, conv="factorized")))
    register(Architecture("cnn_gap", partial(build_cnn, head="gap")))
