"""ncnn: a ``.ncnn.param`` + ``.ncnn.bin`` pair written by pnnx; and its ``convert.ncnn`` stage.

``convert.ncnn`` takes Keras (through ONNX, tf2onnx) or ONNX. The ONNX graph gets a
channel-first input (a Transpose that pnnx folds into the first layer), so the ncnn
model takes NCHW like every ncnn model; the runtime adapter (which ``predict`` runs on
the host too) transposes each NHWC sample. pnnx's Python package imports torch, so only its bundled binary
is run (pnnx is installed with ``--no-deps``), with ``fp16=0`` for fp32 weights unless
``fp16_storage``. int8: the ncnn and pnnx wheels ship no ``ncnn2table``/``ncnn2int8``.

Runtime options are ``ncnn.Option`` fields, set before the model loads; unset ones keep
ncnn's defaults (which turn fp16 on where the CPU has it).
"""

import importlib.util
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
from pydantic import Field

from slimlab import hookimpl
from slimlab.atomic import write_bytes
from slimlab.errors import ArtifactError
from slimlab.formats import Format, RuntimeOptions, builtin_adapter
from slimlab.kit import parity
from slimlab.kit.export import keras_to_onnx
from slimlab.stages import Stage, StageParams

# ncnn layer -> (weight-size key, bias key, bias-count key); weights are tagged blobs, biases raw float32
_WEIGHTED = {
    "Convolution": (6, 5, 0), "ConvolutionDepthWise": (6, 5, 0), "Deconvolution": (6, 5, 0),
    "DeconvolutionDepthWise": (6, 5, 0), "Convolution1D": (6, 5, 0), "InnerProduct": (2, 1, 0),
}
_FP16_TAG = 0x01306B47


@dataclass(frozen=True)
class NcnnModel:
    param: bytes
    weights: bytes


class ConvertParams(StageParams):
    fp16_storage: bool = Field(False, description="store weights as fp16 (halves the .bin; parity then uses the quantized bound)")


def pnnx_binary() -> Path:
    """The executable inside the pnnx wheel, found without importing the package (it imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("convert.ncnn: pnnx is not installed (pip install --no-deps pnnx)")
    return Path(spec.submodule_search_locations[0]) / "pnnx"


def channel_first_input(onnx_bytes: bytes) -> tuple[bytes, list[int]]:
    """Give an NHWC image input a batch-of-one NCHW signature; returns the model and its input shape."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import helper

    try:
        model = onnx.load_from_string(onnx_bytes)
    except DecodeError as exc:
        raise ArtifactError(f"convert.ncnn: the input is not a valid ONNX model: {exc}") from exc
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise ArtifactError(f"convert.ncnn: the ONNX model has {len(inputs)} inputs; slimlab converts single-input models")
    (original,) = inputs
    dims = [d.dim_value for d in original.type.tensor_type.shape.dim][1:]
    if len(dims) != 3:  # not an image: only fix the batch
        original.type.tensor_type.shape.dim[0].dim_value = 1
        return model.SerializeToString(), [1, *dims]
    height, width, channels = dims
    shape = [1, channels, height, width]
    nchw = helper.make_tensor_value_info("in0", original.type.tensor_type.elem_type, shape)
    graph.node.insert(0, helper.make_node("Transpose", ["in0"], [original.name], perm=[0, 2, 3, 1]))
    graph.input.remove(original)
    graph.input.insert(0, nchw)
    return model.SerializeToString(), shape


def convert_ncnn(artifact, params: ConvertParams, ctx) -> NcnnModel:
    """ncnn model through ONNX and pnnx (fp32 weights unless fp16_storage); parity is recorded."""
    onnx_bytes = keras_to_onnx(artifact.model) if artifact.kind == "keras" else artifact.model
    onnx_bytes, shape = channel_first_input(onnx_bytes)
    with tempfile.TemporaryDirectory(prefix="slimlab-pnnx-") as tmp:
        (Path(tmp) / "model.onnx").write_bytes(onnx_bytes)
        argv = [str(pnnx_binary()), "model.onnx", f"inputshape=[{','.join(map(str, shape))}]",
                f"fp16={int(params.fp16_storage)}"]
        result = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=600)
        param, weights = Path(tmp) / "model.ncnn.param", Path(tmp) / "model.ncnn.bin"
        if result.returncode != 0 or not param.is_file():
            tail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
            raise ArtifactError(f"convert.ncnn: pnnx exited {result.returncode}: {tail}")
        model = NcnnModel(param.read_bytes(), weights.read_bytes())
    parity.record(ctx, artifact, NcnnFormat(), model, reduced_precision=params.fp16_storage)
    return model


# The ncnn.Option fields slimlab sets; each is true or false, unset keeps ncnn's default.
FLAGS = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_packing_layout",
         "use_winograd_convolution", "use_sgemm_convolution", "lightmode")
NcnnOptions = pydantic.create_model("NcnnOptions", __base__=RuntimeOptions, **{flag: (bool | None, None) for flag in FLAGS})


class NcnnFormat(Format):
    name = "ncnn"
    filenames = ("model.ncnn.param", "model.ncnn.bin")
    Options = NcnnOptions
    runtime_adapter = builtin_adapter("ncnn")
    converter = Stage("convert.ncnn", convert_ncnn, ConvertParams, inputs=("keras", "onnx"), output="ncnn")

    def save(self, model: NcnnModel, folder: Path) -> None:
        param, weights = self.paths(folder)
        write_bytes(weights, model.weights)
        write_bytes(param, model.param)

    def load(self, folder: Path) -> NcnnModel:
        param, weights = self.paths(folder)
        model = NcnnModel(param.read_bytes(), weights.read_bytes())
        if not model.param.startswith(b"7767517"):
            raise ArtifactError(f"{param}: not an ncnn param file (missing magic 7767517)")
        if self.weights(model) is None:
            raise ArtifactError(f"{weights}: ncnn weights do not match the layers in {param.name} (truncated?)")
        return model

    def weights(self, model: NcnnModel) -> list[np.ndarray] | None:
        """Decode the .bin using the param file; None when it holds layers or encodings this does not know."""
        blob, offset, weights = model.weights, 0, []

        def take(count: int, tagged: bool) -> np.ndarray:
            nonlocal offset
            dtype = np.float32
            if tagged:
                tag = int.from_bytes(blob[offset:offset + 4], "little")
                offset += 4
                if tag == _FP16_TAG:
                    dtype = np.float16
                elif tag != 0:
                    raise ValueError(f"unsupported ncnn weight encoding {tag:#x}")
            values = np.frombuffer(blob, dtype, count, offset).astype(np.float32)
            offset += (count * np.dtype(dtype).itemsize + 3) // 4 * 4
            return values

        try:
            for line in model.param.decode().splitlines()[2:]:
                fields = line.split()
                if fields and fields[0] in _WEIGHTED:
                    n_in, n_out = int(fields[2]), int(fields[3])
                    params = dict(kv.split("=", 1) for kv in fields[4 + n_in + n_out:])
                    size_key, bias_key, count_key = _WEIGHTED[fields[0]]
                    weights.append(take(int(params[str(size_key)]), tagged=True))
                    if int(params.get(str(bias_key), 0)):
                        weights.append(take(int(params[str(count_key)]), tagged=False))
        except (ValueError, KeyError, IndexError):
            return None
        return weights if offset == len(blob) else None

    def device_input_shape(self, nhwc: list[int]) -> list[int]:
        """An ncnn param file carries no input shape: the NHWC shape, channel-first as convert.ncnn made it."""
        batch, *sample = nhwc
        if len(sample) == 3:
            height, width, channels = sample
            return [batch, channels, height, width]
        return [batch, *sample]


@hookimpl
def register_formats(register):
    register(NcnnFormat())
