"""ncnn: a ``.ncnn.param`` + ``.ncnn.bin`` pair written by pnnx; and its ``convert.ncnn`` stage.

``convert.ncnn`` takes Keras or float TFLite (through ONNX, tf2onnx) or ONNX; a quantized
TFLite model (integer tensors) is unsupported: tf2onnx makes a QuantizeLinear/DequantizeLinear
graph of it, which ncnn does not run as int8; so is a sparse one (tf2onnx cannot read it).
The ONNX graph (from Keras or TFLite, NHWC like its source) gets a channel-first input (a
Transpose that pnnx folds into the first layer), so the ncnn model takes NCHW like every
ncnn model; the runtime adapter (which ``predict`` runs on the host too) transposes each NHWC sample. pnnx's Python package imports torch, so only its bundled binary
is run (pnnx is installed with ``--no-deps``), with ``fp16=0`` for fp32 weights unless
``fp16_storage``. int8: the ncnn and pnnx wheels ship no ``ncnn2table``/``ncnn2int8``.

Runtime options are ``ncnn.Option`` fields, set before the model loads; unset ones keep
ncnn's defaults (which turn fp16 on where the CPU, or with ``use_vulkan_compute`` the GPU, has it).
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
from slimlab.errors import ArtifactError, Unsupported
from slimlab.formats import Format, RuntimeOptions, builtin_adapter
from slimlab.kit import parity
from slimlab.kit.export import (TFLITE_TO_ONNX_REFUSALS, has_qdq, keras_to_onnx, tflite_to_onnx,
                                tflite_to_onnx_refusal)
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
        raise Unsupported(f"convert.ncnn: the ONNX model has {len(inputs)} inputs; slimlab converts single-input models")
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
    fold_paddings(graph)
    channel_pads_as_convs(model)
    return model.SerializeToString(), shape


def fold_paddings(graph) -> None:
    """Fold each zero-valued Pad that feeds a Conv into the Conv's own padding.

    Keras' ZeroPadding2D (MobileNetV2 before every stride-2 convolution) reaches ONNX as a Pad,
    in NCHW or in NHWC between two Transposes, and pnnx writes it as a layer ncnn does not
    have (``layer Pad not exists``). A Pad that feeds anything else is left for pnnx.
    """
    from onnx import helper, numpy_helper

    producer = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def sole_consumer(node, op_type: str, perm: list[int] | None = None):
        found = consumers.get(node.output[0], [])
        if len(found) != 1 or found[0].op_type != op_type:
            return None
        return found[0] if perm is None or list(helper.get_attribute_value(found[0].attribute[0])) == perm else None

    for pad in [node for node in graph.node if node.op_type == "Pad"]:
        if (pads := zero_pads(pad, constants)) is None:
            continue
        before = producer.get(pad.input[0])
        after = sole_consumer(pad, "Transpose", [0, 3, 1, 2])
        nhwc = (before is not None and before.op_type == "Transpose" and after is not None
                and list(helper.get_attribute_value(before.attribute[0])) == [0, 2, 3, 1])
        conv = sole_consumer(after if nhwc else pad, "Conv")
        if conv is None:
            continue
        attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in attrs and helper.get_attribute_value(attrs["auto_pad"]) not in (b"NOTSET", b"VALID"):
            continue
        layout = [0, 2, 3, 1] if nhwc else list(range(len(pads) // 2))  # the Pad's dims as NCHW dims
        begin = {dim: pads[i] for i, dim in enumerate(layout)}
        end = {dim: pads[len(layout) + i] for i, dim in enumerate(layout)}
        if len(layout) != 4 or begin[0] or begin[1] or end[0] or end[1]:
            continue  # not a 2-D image's spatial padding
        old = list(helper.get_attribute_value(attrs["pads"])) if "pads" in attrs else [0, 0, 0, 0]
        for name in ("pads", "auto_pad"):
            if name in attrs:
                conv.attribute.remove(attrs[name])
        conv.attribute.append(helper.make_attribute(
            "pads", [old[0] + begin[2], old[1] + begin[3], old[2] + end[2], old[3] + end[3]]))
        conv.input[0] = before.input[0] if nhwc else pad.input[0]
        graph.node.remove(pad)
        if nhwc:
            graph.node.remove(after)
            if consumers[before.output[0]] == [pad]:
                graph.node.remove(before)


def zero_pads(pad, constants: dict) -> list[int] | None:
    """A Pad node's ``pads`` (all begins, then all ends) if it pads with constant zeros on every axis; else None."""
    from onnx import helper

    mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
    value = constants.get(pad.input[2], 1) if len(pad.input) > 2 and pad.input[2] else 0
    axes = len(pad.input) > 3 and pad.input[3]  # opset 18: pads for some axes only
    if mode != b"constant" or pad.input[1] not in constants or value != 0 or axes:
        return None
    return constants[pad.input[1]].tolist()


def channel_pads_as_convs(model) -> None:
    """Rewrite each Pad that only adds zero channels (axis 1, at its start or end) as a 1x1 Conv.

    BlazeFace (MediaPipe's face detector and face landmarker) widens a residual shortcut with zero channels
    before the Add; in ONNX that is a Pad on the channel axis. pnnx leaves it as a ``Pad`` layer, which ncnn
    does not have for channels (the model fails to load). A 1x1 convolution whose weights copy the Cin input
    channels and give zeros for the added ones computes exactly the same. Other Pads are left alone, as is
    one whose input's channel count is not static.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type for v in (*inferred.input, *inferred.value_info)}
    for node in graph.node:
        pads = zero_pads(node, constants) if node.op_type == "Pad" else None
        tensor = types.get(node.input[0]) if pads else None
        if tensor is None or tensor.elem_type != onnx.TensorProto.FLOAT or len(tensor.shape.dim) < 3:
            continue
        rank, channels = len(tensor.shape.dim), tensor.shape.dim[1].dim_value
        if len(pads) != 2 * rank or not channels:
            continue
        before, after = pads[1], pads[rank + 1]
        if any(pads[:1] + pads[2:rank + 1] + pads[rank + 2:]) or min(before, after) < 0 or before + after == 0:
            continue  # pads another axis too, or crops, or does nothing
        weight = np.zeros((before + channels + after, channels) + (1,) * (rank - 2), np.float32)
        weight[before + np.arange(channels), np.arange(channels)] = 1
        name = f"{node.output[0]}_channel_pad_weight"
        graph.initializer.append(numpy_helper.from_array(weight, name))
        node.CopyFrom(helper.make_node("Conv", [node.input[0], name], [node.output[0]], name=node.name,
                                       kernel_shape=[1] * (rank - 2)))


def convert_ncnn(artifact, params: ConvertParams, ctx) -> NcnnModel:
    """ncnn model through ONNX and pnnx (fp32 weights unless fp16_storage); parity is recorded."""
    if artifact.kind == "tflite" and (refusal := tflite_to_onnx_refusal(artifact.model)):
        raise Unsupported(f"convert.ncnn: {refusal}")
    if artifact.kind == "onnx" and has_qdq(artifact.model):  # an imported one: the plan cannot know
        raise Unsupported(f"convert.ncnn: {QUANTIZED}")
    if artifact.kind == "keras":
        onnx_bytes = keras_to_onnx(artifact.model)
    elif artifact.kind == "tflite":
        onnx_bytes = tflite_to_onnx(artifact.model)
    else:
        onnx_bytes = artifact.model
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


# The plan's reason for an integer model (quantize.int8/dynamic's TFLite, quantize.onnx's ONNX). Seen with pnnx
# 20261020: a QuantizeLinear/DequantizeLinear graph becomes pnnx.Expression layers, which ncnn cannot load.
QUANTIZED = ("a quantized TFLite model (integer tensors, as quantize.int8 and quantize.dynamic make) or ONNX model "
             "(quantize.onnx's QuantizeLinear/DequantizeLinear graph) is not converted: pnnx turns such a graph into "
             "layers ncnn cannot load, and the ncnn wheel has no ncnn2int8; convert the float model, or keep this one "
             "in LiteRT or ONNX Runtime")


# The ncnn.Option fields slimlab sets; each is true or false, unset keeps ncnn's default.
# use_vulkan_compute runs on the device's Vulkan GPU (the adapter refuses where there is none); the fp16 flags,
# on by default, then mean fp16 storage and arithmetic on the GPU.
FLAGS = ("use_vulkan_compute", "use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_packing_layout",
         "use_winograd_convolution", "use_sgemm_convolution", "lightmode")
NcnnOptions = pydantic.create_model("NcnnOptions", __base__=RuntimeOptions, **{flag: (bool | None, None) for flag in FLAGS})


class NcnnFormat(Format):
    name = "ncnn"
    filenames = ("model.ncnn.param", "model.ncnn.bin")
    Options = NcnnOptions
    runtime_adapter = builtin_adapter("ncnn")
    converter = Stage("convert.ncnn", convert_ncnn, ConvertParams, inputs=("keras", "tflite", "onnx"), output="ncnn",
                      refuses_traits={**TFLITE_TO_ONNX_REFUSALS, "integer": QUANTIZED})

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
