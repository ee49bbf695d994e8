"""quantize.fp16: weights stored as float16, half the size, computed in float32 (or fp16 on GPUs)."""

from slimlab import hookimpl
from slimlab.kit.export import keras_to_tflite
from slimlab.stages import Stage


def quantize_fp16(artifact, params, ctx) -> bytes:
    """Float16-weight TFLite model."""
    import tensorflow as tf

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    return keras_to_tflite(artifact.model, configure)


@hookimpl
def register_stages(register):
    register(Stage("quantize.fp16", quantize_fp16, inputs=("keras",), output="tflite"))
