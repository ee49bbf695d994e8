"""onnx: an ONNX model, run by onnxruntime on the host and on devices; and its ``convert.onnx`` stage.

``convert.onnx`` exports a Keras model with tf2onnx through a SavedModel, or reads a TFLite
model with tf2onnx's TFLite reader; either graph keeps the NHWC input. A quantized TFLite
model (integer tensors) is refused as unsupported: tf2onnx makes a QuantizeLinear/
DequantizeLinear graph of it, not the model LiteRT runs (a full-int8 one takes int8 input;
a dynamic-range one quantizes activations its own way), and neither pnnx/ncnn nor MNN runs
such a graph as int8. So is one with sparse tensors, which tf2onnx cannot read.
onnxruntime takes no runtime options here.
"""


import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.errors import Unsupported
from slimlab.formats import BytesFormat, builtin_adapter
from slimlab.kit import parity
from slimlab.kit.export import TFLITE_TO_ONNX_REFUSALS, keras_to_onnx, tflite_to_onnx, tflite_to_onnx_refusal
from slimlab.stages import Stage, StageParams


class ConvertParams(StageParams):
    opset: int = Field(13, ge=11, le=21, description="ONNX opset to target")


def convert_onnx(artifact, params: ConvertParams, ctx) -> bytes:
    """ONNX model (tf2onnx, from Keras or a float TFLite model); parity with the source is recorded."""
    if artifact.kind == "keras":
        model = keras_to_onnx(artifact.model, params.opset)
    elif refusal := tflite_to_onnx_refusal(artifact.model):
        raise Unsupported(f"convert.onnx: {refusal}")
    else:
        model = tflite_to_onnx(artifact.model, params.opset)
    parity.record(ctx, artifact, OnnxFormat(), model)
    return model


class OnnxFormat(BytesFormat):
    name = "onnx"
    filenames = ("model.onnx",)
    runtime_adapter = builtin_adapter("onnx")
    converter = Stage("convert.onnx", convert_onnx, ConvertParams, inputs=("keras", "tflite"), output="onnx",
                      refuses_traits=TFLITE_TO_ONNX_REFUSALS)

    def check(self, data: bytes) -> None:
        import onnx

        onnx.checker.check_model(onnx.load_from_string(data))

    def input_specs(self, model: bytes) -> dict[str, dict]:
        import onnx
        from onnx import helper

        graph = onnx.load_from_string(model).graph
        weights = {tensor.name for tensor in graph.initializer}
        return {tensor.name: {"shape": [None, *[dim.dim_value or None for dim in tensor.type.tensor_type.shape.dim][1:]],
                              "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(tensor.type.tensor_type.elem_type)).name}
                for tensor in graph.input if tensor.name not in weights}

    def weights(self, model: bytes) -> list[np.ndarray]:
        """The weights and biases: float initializers, and a QDQ graph's integer ones as their DequantizeLinear
        gives them ((q - zero point) x scale); its scales and zero points, shapes and axes are not weights."""
        import onnx
        from onnx import numpy_helper

        graph = onnx.load_from_string(model).graph
        arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        dequantized, quantization = {}, set()
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and node.input[0] in arrays:
                scale, zero = arrays[node.input[1]], arrays[node.input[2]] if len(node.input) > 2 else 0
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                values = arrays[node.input[0]].astype(np.float32)
                shape = [-1 if i == axis % values.ndim else 1 for i in range(values.ndim)] if np.ndim(scale) else []
                dequantized[node.input[0]] = (values - np.reshape(zero, shape)) * np.reshape(scale, shape)
                quantization.update(node.input[1:])
        return [*dequantized.values(), *(a.astype(np.float32) for name, a in arrays.items()
                                         if np.issubdtype(a.dtype, np.floating) and name not in quantization)]


@hookimpl
def register_formats(register):
    register(OnnxFormat())
