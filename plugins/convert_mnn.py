"""convert.mnn: TFLite or ONNX (Keras via ONNX) to MNN with MNN's converter extension.

The converter runs as ``_tools.mnnconvert([...])`` in a child Python (see
``slimlab.formats.MNN_CONVERT``): never the ``mnnconvert``/``mnnquant`` console
wrappers, never ``MNN.tools`` (its log module sends telemetry and pip-installs
at run time), and never in the same process as TensorFlow (protobuf clash).
"""

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from slimlab import hookimpl, parity
from slimlab.errors import ArtifactError
from slimlab.formats import MNN_CONVERT, keras_to_onnx
from slimlab.stages import Stage, StageParams

_FRAMEWORK = {"tflite": ("TFLITE", "model.tflite"), "onnx": ("ONNX", "model.onnx"), "keras": ("ONNX", "model.onnx")}


class MnnParams(StageParams):
    fp16: bool = Field(False, description="store float weights as fp16 (--fp16)")
    weight_quant_bits: Literal[0, 2, 4, 8] = Field(0, description="weight-only quantisation bits (--weightQuantBits); 0 keeps float")


def _has_integer_tensors(tflite: bytes) -> bool:
    import numpy as np

    from slimlab.formats import interpreter_class

    details = interpreter_class()(model_content=tflite).get_tensor_details()
    return any(np.dtype(d["dtype"]) in (np.int8, np.uint8, np.int16) for d in details)


def convert_mnn(artifact, params: MnnParams, ctx) -> bytes:
    """MNN model from TFLite or ONNX (fp16 / weight-quant options); parity is recorded."""
    if artifact.kind == "tflite" and _has_integer_tensors(artifact.model):
        # Seen with MNN 3.6.1: int8 scales read as NaN, or the converter crashing (free(): invalid size).
        raise ArtifactError("convert.mnn: MNN 3.6.1 cannot convert quantized TFLite models; convert the float "
                            "model and use weight_quant_bits, or keep this model in LiteRT")
    framework, source_name = _FRAMEWORK[artifact.kind]
    source = keras_to_onnx(artifact.model) if artifact.kind == "keras" else artifact.model
    with tempfile.TemporaryDirectory(prefix="slimlab-mnn-") as tmp:
        source_path, output = Path(tmp) / source_name, Path(tmp) / "model.mnn"
        source_path.write_bytes(source)
        argv = ["-f", framework, "--modelFile", str(source_path), "--MNNModel", str(output), "--bizCode", "slimlab"]
        if params.fp16:
            argv.append("--fp16")
        if params.weight_quant_bits:
            argv += ["--weightQuantBits", str(params.weight_quant_bits)]
        result = subprocess.run([sys.executable, "-c", MNN_CONVERT, *argv], capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not output.is_file():
            lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
            raise ArtifactError(f"convert.mnn: MNN's converter failed on {artifact.kind} input (exit {result.returncode}): {lines[-1]}")
        model = output.read_bytes()
    parity.record(ctx, artifact, "mnn", model, reduced_precision=params.fp16 or bool(params.weight_quant_bits))
    return model


@hookimpl
def register_stages(register):
    register(Stage("convert.mnn", convert_mnn, MnnParams, inputs=("keras", "tflite", "onnx"), output="mnn"))
