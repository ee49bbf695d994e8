"""resnet: a small CIFAR-style ResNet (He et al., 2016) of basic blocks with residual Adds.

A 3x3 stem, three stages of ``blocks`` basic blocks each (``width``, 2·width, 4·width channels;
the first block of stages 2 and 3 strides by 2 and projects its shortcut with a 1x1 conv), global
average pooling and a dense head: 6·blocks + 2 layers deep (``blocks: 3`` is ResNet-20).
"""

from pydantic import PositiveInt

from slimlab import hookimpl
from slimlab.kit.training import Architecture, keras


def build_resnet(input_shape, num_classes, width: PositiveInt = 16, blocks: PositiveInt = 2):
    layers = keras().layers

    def conv_bn(x, channels, kernel, strides, name):
        x = layers.Conv2D(channels, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
        return layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)

    inputs = keras().Input(input_shape)
    x = layers.ReLU(name="stem_relu")(conv_bn(inputs, width, 3, 1, "stem"))
    for stage, channels in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, blocks + 1):
            name, strides = f"stage{stage}_block{block}", 2 if stage > 1 and block == 1 else 1
            y = layers.ReLU(name=f"{name}_relu1")(conv_bn(x, channels, 3, strides, f"{name}_conv1"))
            y = conv_bn(y, channels, 3, 1, f"{name}_conv2")
            projected = strides != 1 or x.shape[-1] != channels
            shortcut = conv_bn(x, channels, 1, strides, f"{name}_proj") if projected else x
            x = layers.ReLU(name=f"{name}_relu2")(layers.Add(name=f"{name}_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras().Model(inputs, layers.Dense(num_classes, name="logits")(x), name=f"resnet{6 * blocks + 2}")


@hookimpl
def register_models(register):
    register(Architecture("resnet", build_resnet))
