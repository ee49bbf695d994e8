"""quantize.dynamic: weight-only int8, the survey's "fake quantization".

Each weight tensor is stored as int8 with a scale (and zero point, 0 for
TFLite's symmetric weights) per output channel; activations stay float and
the kernels dequantize on the fly. About 4× smaller, no calibration data.
"""

from slimlab import hookimpl
from slimlab.kit.export import keras_to_tflite
from slimlab.stages import Stage


def quantize_dynamic(artifact, params, ctx) -> bytes:
    """Weight-only int8 TFLite model (dynamic-range quantisation)."""
    import tensorflow as tf

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    return keras_to_tflite(artifact.model, configure)


@hookimpl
def register_stages(register):
    register(Stage("quantize.dynamic", quantize_dynamic, inputs=("keras",), output="tflite", traits=lambda params: {"integer"}))
