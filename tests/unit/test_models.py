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
