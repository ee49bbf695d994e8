"""Exporting a tf_keras model to TFLite and ONNX, from its traced inference function; and TFLite to ONNX.

``TFLiteConverter.from_keras_model`` fails on tf_keras models under TF 2.21. Both
converters take the model's concrete function instead: the same graph a SavedModel
round trip would give (the converted models compute the same outputs), without
writing and reading one, which cost about 0.8 s a conversion.

A TFLite file goes to ONNX with tf2onnx's TFLite reader. A float or fp16-weight model
converts to a float32 graph that computes what LiteRT computes; a quantized one (see
:func:`has_integer_tensors`) becomes a QuantizeLinear/DequantizeLinear graph, and one with
sparse tensors does not convert: the converters refuse both (:func:`tflite_to_onnx_refusal`).
"""

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def inference_function(model):
    """``model(x, training=False)`` traced for any batch size, with the model's variables. Several outputs are
    returned by their Keras names, which a TFLite model's signature then keeps; several inputs keep theirs (one
    input is named ``input``)."""
    import tensorflow as tf

    if len(model.inputs) == 1:
        specs = [tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype, name="input")]
    else:
        specs = [tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name=name)
                 for name, tensor in zip(model.input_names, model.inputs)]

    def infer(*xs):
        outputs = model(xs[0] if len(xs) == 1 else list(xs), training=False)
        return dict(zip(model.output_names, outputs)) if len(model.outputs) > 1 else outputs

    return tf.function(infer, autograph=False, input_signature=specs).get_concrete_function()


def keras_to_tflite(model, configure: Callable[[Any], None] = lambda converter: None) -> bytes:
    """A TFLite flatbuffer; ``configure(converter)`` sets optimisations, calibration data, I/O types."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([inference_function(model)], model)
    configure(converter)
    return converter.convert()


def keras_to_onnx(model, opset: int = 13) -> bytes:
    """An ONNX model (tf2onnx); the input stays NHWC like Keras, and several outputs keep their Keras names."""
    from tf2onnx import convert, tf_loader

    function = inference_function(model)
    inputs = [tensor.name for tensor in function.inputs if tensor.dtype != "resource"]
    outputs = [tensor.name for tensor in function.outputs]
    graph_def = tf_loader.from_function(function, inputs, outputs)
    proto, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset)
    if isinstance(function.structured_outputs, dict):  # flattened in sorted key order, as function.outputs are
        rename_tensors(proto.graph, dict(zip(outputs, sorted(function.structured_outputs))))
    if len(inputs) > 1:  # several inputs keep their Keras names, as the data names them ("image:0" -> "image")
        rename_tensors(proto.graph, {name: name.rsplit(":", 1)[0] for name in inputs})
    return proto.SerializeToString()


def rename_tensors(graph, names: dict[str, str]) -> None:
    """Give a graph's inputs and outputs new names, there and in the nodes that make or read them."""
    for node in graph.node:
        node.output[:] = [names.get(name, name) for name in node.output]
        node.input[:] = [names.get(name, name) for name in node.input]
    for tensor in (*graph.input, *graph.output):
        tensor.name = names.get(tensor.name, tensor.name)


def tflite_to_onnx(data: bytes, opset: int = 13) -> bytes:
    """An ONNX model of a TFLite flatbuffer (tf2onnx); the input stays NHWC like the TFLite model's."""
    from tf2onnx import convert

    with tempfile.TemporaryDirectory(prefix="slimlab-tf2onnx-") as tmp:
        path = Path(tmp) / "model.tflite"  # tf2onnx reads TFLite from a file only
        path.write_bytes(data)
        proto, _ = convert.from_tflite(str(path), opset=opset)
    names = signature_input_names(data)
    if len(names) > 1:  # several inputs keep their signature's names (a Keras model's), as the data names them
        rename_tensors(proto.graph, names)
    return proto.SerializeToString()


def signature_input_names(tflite: bytes) -> dict[str, str]:
    """A TFLite model's input tensor names -> its one signature's input names (the same names without one)."""
    from ai_edge_litert.interpreter import Interpreter

    from slimlab_payload.runtimes.tflite import signature_inputs

    return {detail["name"]: name for name, detail in signature_inputs(Interpreter(model_content=tflite)).items()}


def _tensor_details(tflite: bytes) -> list[dict]:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=tflite).get_tensor_details()


def _integer(details: list[dict]) -> bool:
    return any(np.dtype(d["dtype"]) in (np.int8, np.uint8, np.int16) for d in details)


def has_integer_tensors(tflite: bytes) -> bool:
    """Whether a TFLite model is quantized: any int8/uint8/int16 tensor (quantize.int8's weights and activations,
    quantize.dynamic's weights). fp16 weights do not count: converters dequantize them to float32."""
    return _integer(_tensor_details(tflite))


# Why tf2onnx's path is refused, by the model's trait (slimlab.stages.Stage.traits): the plan and the converters say it.
TFLITE_TO_ONNX_REFUSALS = {
    "integer": ("a quantized TFLite model (integer tensors, as quantize.int8 and quantize.dynamic make) is not "
                "converted: tf2onnx makes a QuantizeLinear/DequantizeLinear graph of it, which is not what LiteRT "
                "runs and which ncnn and MNN do not run as int8; convert the float model, or keep this one in LiteRT"),
    "sparse": ("a TFLite model with sparse tensors (convert.tflite sparse: true) is not converted: tf2onnx cannot "
               "read TFLite's sparse encoding; convert the dense model instead"),
}


def has_qdq(onnx_model: bytes) -> bool:
    """Whether an ONNX model is quantized: QuantizeLinear/DequantizeLinear nodes (quantize.onnx's QDQ graph)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        graph = onnx.load_from_string(onnx_model).graph
    except DecodeError:  # not an ONNX model at all: the converter names that
        return False
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def tflite_to_onnx_refusal(tflite: bytes) -> str | None:
    """Why :func:`tflite_to_onnx` does not convert this TFLite model, in one line; None if it does."""
    details = _tensor_details(tflite)
    if _integer(details):
        return TFLITE_TO_ONNX_REFUSALS["integer"]
    if any(d.get("sparsity_parameters") for d in details):
        return TFLITE_TO_ONNX_REFUSALS["sparse"]
    return None
