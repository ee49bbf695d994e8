"""convert.ncnn: Keras or ONNX to ncnn (.ncnn.param + .ncnn.bin) with pnnx.

Keras goes through ONNX first (tf2onnx). The ONNX graph gets a channel-first
input (a Transpose that pnnx folds into the first layer), so the ncnn model
takes NCHW like every ncnn model; slimlab's ncnn runners transpose the NHWC
batch once. pnnx's Python package imports torch, so only its bundled binary
is run (pnnx is installed with ``--no-deps``).

int8: the ncnn and pnnx wheels ship no ``ncnn2table``/``ncnn2int8``, so there
is no int8 ncnn here (see the README).
"""

import importlib.util
import subprocess
import tempfile
from pathlib import Path

from pydantic import Field

from slimlab import hookimpl, parity
from slimlab.errors import ArtifactError
from slimlab.formats import NcnnModel, keras_to_onnx
from slimlab.stages import Stage, StageParams


class NcnnParams(StageParams):
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
    from onnx import helper

    from google.protobuf.message import DecodeError

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
        shape = [1, *dims]
        original.type.tensor_type.shape.dim[0].dim_value = 1
        return model.SerializeToString(), shape
    height, width, channels = dims
    shape = [1, channels, height, width]
    nchw = helper.make_tensor_value_info("in0", original.type.tensor_type.elem_type, shape)
    graph.node.insert(0, helper.make_node("Transpose", ["in0"], [original.name], perm=[0, 2, 3, 1]))
    graph.input.remove(original)
    graph.input.insert(0, nchw)
    return model.SerializeToString(), shape


def convert_ncnn(artifact, params: NcnnParams, ctx) -> NcnnModel:
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
    parity.record(ctx, artifact, "ncnn", model, reduced_precision=params.fp16_storage)
    return model


@hookimpl
def register_stages(register):
    register(Stage("convert.ncnn", convert_ncnn, NcnnParams, inputs=("keras", "onnx"), output="ncnn"))
