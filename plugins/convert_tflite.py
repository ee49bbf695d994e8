"""convert.tflite: a Keras model to a float32 TFLite flatbuffer, unchanged numerically.

``sparse: true`` stores mostly-zero kernels (after pruning) in TFLite's sparse
tensor encoding (index + value lists): the survey's sparse storage, visible in
the deployed file's size. LiteRT densifies or runs them sparse. (The same
encoding on a full-int8 model saved little here, and LiteRT 2.3's XNNPACK
delegate refused its sparse int8 FULLY_CONNECTED, so quantize.int8 does not offer it.)
"""

from pydantic import Field

from slimlab import hookimpl, parity
from slimlab.formats import keras_to_tflite
from slimlab.stages import Stage, StageParams


class TfliteParams(StageParams):
    sparse: bool = Field(False, description="store mostly-zero kernels in TFLite's sparse (index + value) encoding")


def convert_tflite(artifact, params: TfliteParams, ctx) -> bytes:
    """Float32 TFLite model through a SavedModel; parity with the Keras model is recorded."""
    import tensorflow as tf

    def configure(converter):
        if params.sparse:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]

    model = keras_to_tflite(artifact.model, configure)
    parity.record(ctx, artifact, "tflite", model)
    return model


@hookimpl
def register_stages(register):
    register(Stage("convert.tflite", convert_tflite, TfliteParams, inputs=("keras",), output="tflite"))
