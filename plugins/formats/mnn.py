"""mnn: an MNN model, run by MNN's Interpreter/Session API; and its ``convert.mnn`` stage.

MNN's converter is the ``_tools.mnnconvert([...])`` extension, run in a child Python
(see :data:`MNN_CONVERT`): never the ``mnnconvert``/``mnnquant`` console wrappers,
never ``MNN.tools`` (its log module sends telemetry and pip-installs at run time),
and never in the same process as TensorFlow (their protobuf descriptors clash).
``convert.mnn`` takes TFLite, ONNX, or Keras (through ONNX).

Runtime options: the session's ``precision`` and ``power`` (normal, high, low); MNN's
``low`` precision means fp16 on ARM.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.errors import ArtifactError, Unsupported
from slimlab.formats import BytesFormat, RuntimeOptions, builtin_adapter
from slimlab.kit import parity
from slimlab.kit.export import has_integer_tensors, has_qdq, keras_to_onnx
from slimlab.stages import Stage, StageParams

MNN_CONVERT = "import sys, _tools; sys.exit(0 if _tools.mnnconvert(['mnnconvert', *sys.argv[1:]]) else 1)"
Mode = Literal["normal", "high", "low"]


def mnn_convert(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MNN_CONVERT, *argv], capture_output=True, text=True, timeout=600)


def mnn_dump(data: bytes) -> dict | None:
    """The model as MNN's converter dumps it to JSON, or None if it cannot read it."""
    with tempfile.TemporaryDirectory(prefix="slimlab-mnn-") as tmp:
        model, dump = Path(tmp) / "model.mnn", Path(tmp) / "model.json"
        model.write_bytes(data)
        result = mnn_convert(["-f", "MNN", "--modelFile", str(model), "--JsonFile", str(dump)])
        if result.returncode != 0 or not dump.is_file():
            return None
        # MNN writes C's nan/inf spellings, which JSON does not have.
        text = re.sub(r"-?\bnan\b", "NaN", dump.read_text())
        return json.loads(re.sub(r"\b(-?)inf\b", r"\1Infinity", text))


class ConvertParams(StageParams):
    fp16: bool = Field(False, description="store float weights as fp16 (--fp16)")
    weight_quant_bits: Literal[0, 2, 4, 8] = Field(0, description="weight-only quantisation bits (--weightQuantBits); 0 keeps float")


# Seen with MNN 3.6.1: int8 scales read as NaN, or the converter crashing (free(): invalid size); and its TFLite
# reader refusing sparse tensors ("Convert error, please check your file format").
QUANTIZED_TFLITE = ("MNN 3.6.1 cannot convert quantized TFLite models; convert the float model and use "
                    "weight_quant_bits, or keep this model in LiteRT")
SPARSE_TFLITE = ("MNN 3.6.1 cannot read TFLite's sparse tensors (convert.tflite sparse: true); convert the dense "
                 "model instead")
# The plan's reason for any integer model. quantize.onnx's QDQ graph crashes the converter (vector::_M_range_check)
# after onnxruntime's pre-processing; without it, the MNN model fails to load its first convolution's shape.
QUANTIZED = ("MNN 3.6.1 cannot convert quantized TFLite models, nor quantize.onnx's QuantizeLinear/DequantizeLinear "
             "ONNX ones; convert the float model and use weight_quant_bits, or keep this model in LiteRT or ONNX Runtime")


def convert_mnn(artifact, params: ConvertParams, ctx) -> bytes:
    """MNN model from TFLite or ONNX (fp16 / weight-quant options); parity is recorded."""
    if artifact.kind == "tflite" and has_integer_tensors(artifact.model):
        raise Unsupported(f"convert.mnn: {QUANTIZED_TFLITE}")
    if artifact.kind == "onnx" and has_qdq(artifact.model):  # an imported one: the plan cannot know
        raise Unsupported(f"convert.mnn: {QUANTIZED}")
    framework = "TFLITE" if artifact.kind == "tflite" else "ONNX"
    source = keras_to_onnx(artifact.model) if artifact.kind == "keras" else artifact.model
    with tempfile.TemporaryDirectory(prefix="slimlab-mnn-") as tmp:
        source_path, output = Path(tmp) / f"model.{framework.lower()}", Path(tmp) / "model.mnn"
        source_path.write_bytes(source)
        argv = ["-f", framework, "--modelFile", str(source_path), "--MNNModel", str(output), "--bizCode", "slimlab"]
        if params.fp16:
            argv.append("--fp16")
        if params.weight_quant_bits:
            argv += ["--weightQuantBits", str(params.weight_quant_bits)]
        result = mnn_convert(argv)
        if result.returncode != 0 or not output.is_file():
            lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
            raise ArtifactError(f"convert.mnn: MNN's converter failed on {artifact.kind} input "
                                f"(exit {result.returncode}): {lines[-1]}")
        model = output.read_bytes()
    parity.record(ctx, artifact, MnnFormat(), model, reduced_precision=params.fp16 or bool(params.weight_quant_bits))
    return model


class MnnOptions(RuntimeOptions):
    precision: Mode | None = Field(None, description="session precision (default normal; low is fp16 on ARM)")
    power: Mode | None = Field(None, description="session power mode (default normal)")


class MnnFormat(BytesFormat):
    name = "mnn"
    filenames = ("model.mnn",)
    Options = MnnOptions
    runtime_adapter = builtin_adapter("mnn")
    converter = Stage("convert.mnn", convert_mnn, ConvertParams, inputs=("keras", "tflite", "onnx"), output="mnn",
                      refuses_traits={"integer": QUANTIZED, "sparse": SPARSE_TFLITE})
    predict_options = {"precision": "high"}

    def check(self, data: bytes) -> None:
        if mnn_dump(data) is None:
            raise ValueError("MNN's converter cannot read it")

    def weights(self, model: bytes) -> list[np.ndarray] | None:
        """Float weights and biases of each op; None if any are quantised (packed buffers, not decoded here)."""
        weights = []
        for op in mnn_dump(model)["oplists"]:
            main = op.get("main")
            if not isinstance(main, dict):
                continue
            if "quanParameter" in main or "symmetricQuan" in main:
                return None
            weights += [np.asarray(main[key], np.float32) for key in ("weight", "bias") if isinstance(main.get(key), list)]
        return weights


@hookimpl
def register_formats(register):
    register(MnnFormat())
