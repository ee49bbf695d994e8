"""convert.onnx: a Keras model to ONNX with tf2onnx, through a SavedModel (NHWC input kept)."""

from pydantic import Field

from slimlab import hookimpl, parity
from slimlab.formats import keras_to_onnx
from slimlab.stages import Stage, StageParams


class OnnxParams(StageParams):
    opset: int = Field(13, ge=11, le=21, description="ONNX opset to target")


def convert_onnx(artifact, params: OnnxParams, ctx) -> bytes:
    """ONNX model (tf2onnx from a SavedModel); parity with the Keras model is recorded."""
    model = keras_to_onnx(artifact.model, params.opset)
    parity.record(ctx, artifact, "onnx", model)
    return model


@hookimpl
def register_stages(register):
    register(Stage("convert.onnx", convert_onnx, OnnxParams, inputs=("keras",), output="onnx"))
