"""quantize.onnx: static int8 quantisation of an ONNX model with ONNX Runtime's quantizer.

ONNX Runtime's recipe: ``quant_pre_process`` (graph optimisation, e.g. BatchNorm folded into
the convolutions, MatMul + Add fused into Gemm, and shape inference), then ``quantize_static``
in the QDQ format: int8 weights (per output channel unless ``per_channel: false``) and
activations calibrated (min/max) on a seeded sample of images, as quantize.int8's (the data
set's calibration split, else its training split), each quantized tensor
wrapped in a QuantizeLinear/DequantizeLinear pair that ONNX Runtime fuses into int8 kernels.
The model keeps its float NHWC input and outputs, under the same names.

``activations``: uint8 (the default) is what ONNX Runtime's x86 kernels fuse throughout; with int8
activations on x86 (1.31) it leaves residual Adds, and the convolutions beside them, in float,
and a MobileNetV2 ran slower than the float model. int8 is ONNX Runtime's advice for ARM.

Neither pnnx (ncnn) nor MNN's converter makes a working model of the QDQ graph, so those
conversions refuse the ``integer`` trait; the model runs in ONNX Runtime.
"""

from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.errors import Unsupported
from slimlab.kit.training import representative_samples
from slimlab.stages import Stage, StageParams

# Ops that mean the graph is quantized already.
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger", "MatMulNBits"}


class OnnxInt8Params(StageParams):
    representative_samples: int = Field(200, ge=1, le=100_000, description="images that calibrate the ranges")
    per_channel: bool = Field(True, description="a weight scale per output channel (else one per tensor)")
    activations: Literal["uint8", "int8"] = Field("uint8", description="type of the quantized activations")


def quantize_onnx(artifact, params: OnnxInt8Params, ctx) -> bytes:
    """Static int8 ONNX model (ONNX Runtime's quantizer, QDQ format) calibrated on a representative data set."""
    import tempfile

    import onnx
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    original = onnx.load_from_string(artifact.model)
    graph = original.graph
    if already := sorted(QUANTIZED_OPS & {node.op_type for node in graph.node}):
        raise Unsupported(f"quantize.onnx: the model is quantized already ({', '.join(already)} nodes); "
                          "quantize its float model")
    weights = {tensor.name for tensor in graph.initializer}
    dtypes = {tensor.name: onnx.helper.tensor_dtype_to_np_dtype(tensor.type.tensor_type.elem_type)
              for tensor in graph.input if tensor.name not in weights}
    samples = representative_samples(ctx.splits, params.representative_samples, ctx.seed)()

    class Calibration(CalibrationDataReader):
        fed = 0

        def get_next(self):
            batch = next(samples, None)
            if batch is None:
                return None
            self.fed += 1
            by_name = batch if isinstance(batch, dict) else dict(zip(dtypes, batch))
            return {name: np.asarray(by_name[name], dtype) for name, dtype in dtypes.items()}

    calibration = Calibration()
    with tempfile.TemporaryDirectory(prefix="slimlab-ort-quant-") as tmp:
        source, prepared, quantized = (Path(tmp) / f for f in ("float.onnx", "prepared.onnx", "int8.onnx"))
        try:
            opset = next(o.version for o in original.opset_import if o.domain in ("", "ai.onnx"))
            if params.per_channel and opset < 13:  # DequantizeLinear's per-channel axis came in opset 13
                original = onnx.version_converter.convert_version(original, 13)
            onnx.save(original, source)
            # shape inference without sympy's symbolic pass (for transformers' dynamic shapes; not installed)
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(quantized), calibration, quant_format=QuantFormat.QDQ,
                            per_channel=params.per_channel, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QInt8 if params.activations == "int8" else QuantType.QUInt8)
        except Exception as exc:  # ONNX Runtime's quantizer has no error type of its own
            message = "".join(f": {line}" for line in str(exc).strip().splitlines()[:1])
            raise Unsupported(f"quantize.onnx: ONNX Runtime {onnxruntime.__version__} cannot quantize this model: "
                              f"{type(exc).__name__}{message}") from exc
        model = quantized.read_bytes()

    nodes = onnx.load_from_string(model).graph.node
    dequantized = {out for node in nodes if node.op_type == "DequantizeLinear" for out in node.output}
    compute = [node for node in nodes if node.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    ctx.record(quantization={
        "onnxruntime": onnxruntime.__version__,
        "calibration_samples": calibration.fed,
        "quantize_linear": sum(node.op_type == "QuantizeLinear" for node in nodes),
        "dequantize_linear": sum(node.op_type == "DequantizeLinear" for node in nodes),
        # by op type: ops that read int8 (dequantized) data, which ONNX Runtime runs as int8 kernels where it has
        # them; and the ops left in float
        "int8_ops": dict(Counter(n.op_type for n in compute if n.input and n.input[0] in dequantized)),
        "float_ops": dict(Counter(n.op_type for n in compute if not (n.input and n.input[0] in dequantized))),
    })
    return model


@hookimpl
def register_stages(register):
    register(Stage("quantize.onnx", quantize_onnx, OnnxInt8Params, inputs=("onnx",), output="onnx",
                   traits=lambda params: frozenset({"integer"})))
