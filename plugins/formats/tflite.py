"""tflite: a TFLite flatbuffer, run on the host and on devices by LiteRT; and its ``convert.tflite`` stage.

``convert.tflite`` makes a float32 model from Keras, numerically unchanged. With
``sparse: true`` it stores mostly-zero kernels (after pruning) in TFLite's sparse
tensor encoding (index + value lists): the survey's sparse storage, visible in the
deployed file's size. (The same encoding on a full-int8 model saved little here,
and LiteRT 2.3's XNNPACK delegate refused its sparse int8 FULLY_CONNECTED, so
quantize.int8 does not offer it.)

Runtime option ``xnnpack: false`` builds the interpreter without LiteRT's default
XNNPACK delegate. Reading the stored weights and counting MACs needs no TensorFlow:
LiteRT ships the flatbuffer schema. MACs are counted per op of the main graph with the
rule the Keras format uses: one per filter weight per output position of CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED (per input position for TRANSPOSE_CONV); other
ops (ADD, MUL, MEAN, HARD_SWISH, QUANTIZE, ...) count 0.
"""

import math
import sys

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.formats import BytesFormat, RuntimeOptions, builtin_adapter
from slimlab.kit import parity
from slimlab.kit.export import keras_to_tflite
from slimlab.stages import Stage, StageParams
from slimlab_payload.runtimes.tflite import signature_inputs

_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
_PASS_THROUGH_OPS = {"DEQUANTIZE", "DENSIFY"}


def interpreter_class():
    """LiteRT first (maintained), then tflite_runtime, then TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from tensorflow.lite import Interpreter
    return Interpreter


def decode_tensor(tensor, raw: np.ndarray, dtypes: dict) -> np.ndarray:
    """A stored tensor as real values; a sparse one counts its dense size, only its stored values nonzero."""
    dtype = np.dtype(dtypes[tensor.type].lower())
    values = raw.view(dtype)
    if tensor.sparsity is not None:
        dense = np.zeros(int(np.prod(tensor.shape)), np.float32)
        dense[: values.size] = values
        return dense
    values = values.reshape(tensor.shape)
    q = tensor.quantization
    if q is not None and q.scale is not None and np.issubdtype(dtype, np.integer):
        zero_point = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float32)
        scale = np.asarray(q.scale, np.float32)
        if scale.size > 1:
            axis_shape = [1] * values.ndim
            axis_shape[q.quantizedDimension] = -1
            scale, zero_point = scale.reshape(axis_shape), zero_point.reshape(axis_shape)
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


class ConvertParams(StageParams):
    sparse: bool = Field(False, description="store mostly-zero kernels in TFLite's sparse (index + value) encoding")


def convert_tflite(artifact, params: ConvertParams, ctx) -> bytes:
    """Float32 TFLite model through a SavedModel; parity with the Keras model is recorded."""
    import tensorflow as tf

    def configure(converter):
        if params.sparse:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]

    model = keras_to_tflite(artifact.model, configure)
    parity.record(ctx, artifact, TfliteFormat(), model)
    return model


class TfliteOptions(RuntimeOptions):
    xnnpack: bool | None = Field(None, description="LiteRT's default XNNPACK delegate (default true)")


class TfliteFormat(BytesFormat):
    name = "tflite"
    filenames = ("model.tflite",)
    Options = TfliteOptions
    runtime_adapter = builtin_adapter("tflite")
    converter = Stage("convert.tflite", convert_tflite, ConvertParams, inputs=("keras",), output="tflite",
                      traits=lambda params: {"sparse"} if params.sparse else set())
    # Why convert.tflite takes no ONNX model (the plan reports it for an .onnx import).
    refuses = {"onnx": "onnx2tf, the maintained ONNX to TFLite converter, does not install beside slimlab's "
                       "pins (1.29 pins tensorflow 2.19, numpy 1.26, protobuf 4.25 and onnx 1.19; 2.x needs "
                       "Python >= 3.12) and downloads a calibration file from GitHub when it runs"}

    def check(self, data: bytes) -> None:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("no 'TFL3' flatbuffer identifier")
        interpreter = interpreter_class()
        # Without the default XNNPACK delegate: a check runs at every config load, and the delegate logs a line.
        resolver = sys.modules[interpreter.__module__].OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interpreter(model_content=data, experimental_op_resolver_type=resolver).allocate_tensors()

    def input_specs(self, model: bytes) -> dict[str, dict]:
        """By the signature's input names (a Keras model's), else the tensors' names."""
        details = signature_inputs(interpreter_class()(model_content=model))
        return {name: {"shape": [None, *[None if dim < 0 else int(dim) for dim in detail["shape_signature"][1:]]],
                       "dtype": np.dtype(detail["dtype"]).name} for name, detail in details.items()}

    def weights(self, model: bytes) -> list[np.ndarray]:
        """Constant weight/bias tensors of the weighted ops, following DEQUANTIZE/DENSIFY to what is stored."""
        flat, opname, dtypes = read_flatbuffer(model)
        weights = []
        for graph in flat.subgraphs:
            producer = {out: op for op in graph.operators for out in op.outputs}
            seen = set()
            for op in graph.operators:
                if opname(op) not in _WEIGHTED_OPS:
                    continue
                for index in list(op.inputs)[1:]:
                    while index in producer and opname(producer[index]) in _PASS_THROUGH_OPS:
                        index = producer[index].inputs[0]
                    tensor = graph.tensors[index] if index >= 0 else None
                    buffer = flat.buffers[tensor.buffer] if tensor is not None else None
                    if index in seen or buffer is None or buffer.data is None or len(buffer.data) == 0:
                        continue
                    seen.add(index)
                    weights.append(decode_tensor(tensor, np.asarray(buffer.data, np.uint8), dtypes))
        return weights

    def macs(self, model: bytes) -> dict:
        """Per op of the main graph (named ``<index>:<output tensor>``), from the tensors' static shapes."""
        flat, opname, _ = read_flatbuffer(model)
        graph = flat.subgraphs[0]
        counts = {}
        for index, op in enumerate(graph.operators):
            shape = {i: [int(d) for d in graph.tensors[i].shape] for i in [*op.inputs, *op.outputs] if i >= 0}
            out, name = shape[op.outputs[0]], opname(op)
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                taps = shape[op.inputs[1]][1:]  # filters: (out, kh, kw, in), (1, kh, kw, out), (out, in)
                n = math.prod(out) * math.prod(taps if name != "DEPTHWISE_CONV_2D" else taps[:-1])
            elif name == "TRANSPOSE_CONV":  # inputs: output shape, filter (out, kh, kw, in), input
                n = math.prod(shape[op.inputs[2]]) * math.prod(shape[op.inputs[1]][:-1])
            else:
                continue
            counts[f"{index}:{graph.tensors[op.outputs[0]].name.decode().split(';')[0]}"] = n
        return {"total": sum(counts.values()), "layers": counts}


def read_flatbuffer(model: bytes):
    """The model as flatbuffer objects, a function naming an op, and tensor type names by code."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    flat = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))

    def opname(op):
        code = flat.operatorCodes[op.opcodeIndex]
        return names[max(code.builtinCode, code.deprecatedBuiltinCode)]

    return flat, opname, dtypes


@hookimpl
def register_formats(register):
    register(TfliteFormat())
