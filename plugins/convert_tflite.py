"""convert.tflite: a Keras model to a float32 TFLite flatbuffer, unchanged numerically."""

from slimlab import hookimpl
from slimlab.formats import keras_to_tflite
from slimlab.stages import Stage


def convert_tflite(artifact, params, ctx) -> bytes:
    """Float32 TFLite model through a SavedModel."""
    return keras_to_tflite(artifact.model)


@hookimpl
def register_stages(register):
    register(Stage("convert.tflite", convert_tflite, inputs=("keras",), output="tflite"))
