"""mobilenet_v3_small: tf_keras's MobileNetV3-Small (squeeze-excite Multiply gates, hard-swish), random weights.

Nothing is downloaded (``weights=None``). Its own top (1x1 convs as dense layers) gives the logits,
with no softmax and no input rescaling: slimlab's data is already in [0, 1]. The input must be at
least 32x32.
"""

from typing import Annotated

from pydantic import Field

from slimlab import hookimpl
from slimlab.kit.training import Architecture, keras
from slimlab.plugins.models.mobilenet_v2 import Alpha, fast_batchnorm


def build_mobilenet_v3_small(input_shape, num_classes, alpha: Alpha = 1.0,
                             dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2):
    model = keras().applications.MobileNetV3Small(
        input_shape=input_shape, alpha=alpha, include_top=True, weights=None, classes=num_classes,
        dropout_rate=dropout, classifier_activation=None, include_preprocessing=False,
    )
    return fast_batchnorm(model)


@hookimpl
def register_models(register):
    register(Architecture("mobilenet_v3_small", build_mobilenet_v3_small))
