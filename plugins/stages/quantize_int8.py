"""quantize.int8: post-training full-integer quantisation (weights and activations in int8).

A representative sample of the calibration split's images (``dataset.calibration_fraction``;
training images without one) calibrates the activation ranges.
``io: int8`` also makes the model's input and output int8, as MCUs and NPUs
want; ``io: float`` keeps float I/O with (de)quantise ops at the edges.
"""

from typing import Literal

from pydantic import Field

from slimlab import hookimpl
from slimlab.kit.export import keras_to_tflite
from slimlab.stages import Stage, StageParams
from slimlab.kit.training import representative_samples


class Int8Params(StageParams):
    representative_samples: int = Field(200, ge=1, le=100_000)
    io: Literal["int8", "float"] = "int8"


def quantize_int8(artifact, params: Int8Params, ctx) -> bytes:
    """Full-integer int8 TFLite model calibrated on a representative data set."""
    import tensorflow as tf

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_samples(ctx.splits, params.representative_samples, ctx.seed)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if params.io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    return keras_to_tflite(artifact.model, configure)


@hookimpl
def register_stages(register):
    register(Stage("quantize.int8", quantize_int8, Int8Params, inputs=("keras",), output="tflite", traits=lambda params: {"integer"}))
