"""What slimlab knows about each model kind: file names, save, load, predict, weights.

Stages return plain model objects (a Keras model, TFLite/ONNX/MNN bytes, an
:class:`NcnnModel`); the host uses these handlers to store them and to measure
size, parameters, sparsity and accuracy the same way for every stage, each in
its own runtime.

Layout: every ``predict`` takes the Keras NHWC batch. A runtime that wants
channel-first input (ncnn) gets it transposed here, once, so users never do.
"""

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from slimlab.atomic import atomic_path, write_bytes
from slimlab.errors import ArtifactError


@dataclass(frozen=True)
class Format:
    kind: str
    filename: str
    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]
    predict: Callable[[Any, np.ndarray], np.ndarray]
    # None when the stored weights cannot be decoded honestly (e.g. MNN's packed quantised buffers)
    weights: Callable[[Any], list[np.ndarray] | None]
    extra_files: tuple[str, ...] = field(default=())  # files the model needs beside ``filename``

    @property
    def filenames(self) -> tuple[str, ...]:
        return (self.filename, *self.extra_files)


# --- Keras (tf_keras, so that tfmot works on the same models) ---------------------------


def _keras():
    import tf_keras

    return tf_keras


def save_keras(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_keras(path: Path):
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path}: not a Keras .keras archive (truncated or corrupt)")
    try:
        return _keras().models.load_model(path, compile=False)
    except Exception as exc:
        raise ArtifactError(f"{path}: Keras could not load the model: {exc}") from exc


def predict_keras(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def keras_weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


# --- TFLite flatbuffers ---------------------------------------------------------------


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


def keras_to_tflite(model, configure: Callable[[Any], None] = lambda converter: None) -> bytes:
    """Convert through a SavedModel: ``from_keras_model`` fails on tf_keras models under TF 2.21."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="slimlab-savedmodel-") as saved:
        model.save(saved, save_format="tf")
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        configure(converter)
        return converter.convert()


def load_tflite(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError(f"{path}: not a TFLite flatbuffer (missing 'TFL3' identifier; truncated or corrupt)")
    try:
        interpreter_class()(model_content=data).allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: LiteRT cannot load the model: {exc}") from exc
    return data


def write_bytes_to(data: bytes, path: Path) -> None:
    """Save a model that is one byte string (TFLite, ONNX, MNN)."""
    write_bytes(path, data)


def predict_tflite(data: bytes, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Run every sample through LiteRT, quantising input and dequantising output as the model asks."""
    interpreter = interpreter_class()(model_content=data, num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    x = _to_tensor_dtype(x, inp)
    logits = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        logits.append(_from_tensor_dtype(interpreter.get_tensor(out["index"])[0], out))
    return np.stack(logits)


def _to_tensor_dtype(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _from_tensor_dtype(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
_PASS_THROUGH_OPS = {"DEQUANTIZE", "DENSIFY"}


def tflite_weights(data: bytes) -> list[np.ndarray]:
    """Constant weight/bias tensors of the weighted ops, as real values (zero means zero).

    Follows DEQUANTIZE/DENSIFY back to the stored tensor, so fp16 and sparse
    models count what is actually stored. A sparse tensor counts its dense size,
    and only its stored values can be nonzero.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))

    def opname(op):
        code = model.operatorCodes[op.opcodeIndex]
        return names[max(code.builtinCode, code.deprecatedBuiltinCode)]

    weights = []
    for graph in model.subgraphs:
        producer = {out: op for op in graph.operators for out in op.outputs}
        seen = set()
        for op in graph.operators:
            if opname(op) not in _WEIGHTED_OPS:
                continue
            for index in list(op.inputs)[1:]:
                while index in producer and opname(producer[index]) in _PASS_THROUGH_OPS:
                    index = producer[index].inputs[0]
                tensor = graph.tensors[index] if index >= 0 else None
                buffer = model.buffers[tensor.buffer] if tensor is not None else None
                if index in seen or buffer is None or buffer.data is None or len(buffer.data) == 0:
                    continue
                seen.add(index)
                weights.append(_decode_tensor(tensor, np.asarray(buffer.data, np.uint8), dtypes))
    return weights


def _decode_tensor(tensor, raw: np.ndarray, dtypes: dict) -> np.ndarray:
    dtype = np.dtype(dtypes[tensor.type].lower())
    values = raw.view(dtype)
    if tensor.sparsity is not None:
        # Only the stored values are decoded, not their positions: enough to count params and zeros.
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


# --- ONNX (tf2onnx from a SavedModel; the graph keeps Keras' NHWC input) -----------------


def keras_to_onnx(model, opset: int = 13) -> bytes:
    """Convert through a SavedModel, like :func:`keras_to_tflite`, with tf2onnx."""
    from tf2onnx import convert, tf_loader

    with tempfile.TemporaryDirectory(prefix="slimlab-savedmodel-") as saved:
        model.save(saved, save_format="tf")
        graph_def, inputs, outputs = tf_loader.from_saved_model(saved, None, None)
    proto, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset)
    return proto.SerializeToString()


def load_onnx(path: Path) -> bytes:
    import onnx

    data = Path(path).read_bytes()
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others for a bad file
        raise ArtifactError(f"{path}: not a valid ONNX model (truncated or corrupt): {exc}") from exc
    return data


def predict_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    if isinstance(feed.shape[0], int):  # batch fixed (to 1) in the graph: one sample at a time
        return np.concatenate([session.run(None, {feed.name: x[i:i + 1]})[0] for i in range(len(x))])
    return session.run(None, {feed.name: x.astype(np.float32)})[0]


def onnx_weights(data: bytes) -> list[np.ndarray]:
    """Float initializers: the weights and biases (integer ones are shapes and axes)."""
    import onnx
    from onnx import numpy_helper

    arrays = (numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer)
    return [a.astype(np.float32) for a in arrays if np.issubdtype(a.dtype, np.floating)]


# --- ncnn (.ncnn.param + .ncnn.bin written by pnnx; channel-first input blob) -------------


@dataclass(frozen=True)
class NcnnModel:
    param: bytes
    weights: bytes


def _ncnn_bin_path(param_path: Path) -> Path:
    return Path(param_path).with_suffix(".bin")  # model.ncnn.param -> model.ncnn.bin


def save_ncnn(model: NcnnModel, path: Path) -> None:
    write_bytes(_ncnn_bin_path(path), model.weights)
    write_bytes(path, model.param)


def load_ncnn(path: Path) -> NcnnModel:
    model = NcnnModel(Path(path).read_bytes(), _ncnn_bin_path(path).read_bytes())
    if not model.param.startswith(b"7767517"):
        raise ArtifactError(f"{path}: not an ncnn param file (missing magic 7767517)")
    if ncnn_weights(model) is None:
        raise ArtifactError(f"{_ncnn_bin_path(path)}: ncnn weights do not match the layers in {path.name} (truncated?)")
    return model


def ncnn_net(model: NcnnModel, options: dict | None = None):
    """An ``ncnn.Net`` with ``options`` (``num_threads``, ``use_fp16_storage``, ...) set before loading."""
    import ncnn

    net = ncnn.Net()
    for name, value in (options or {}).items():
        setattr(net.opt, name, value)
    with tempfile.TemporaryDirectory(prefix="slimlab-ncnn-") as tmp:
        param, weights = Path(tmp) / "model.ncnn.param", Path(tmp) / "model.ncnn.bin"
        param.write_bytes(model.param)
        weights.write_bytes(model.weights)
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise ArtifactError("ncnn could not load the model (param and bin do not match)")
    return net


def predict_ncnn(model: NcnnModel, x: np.ndarray, options: dict | None = None) -> np.ndarray:
    import ncnn

    net = ncnn_net(model, options)
    # pnnx graphs are channel-first: NHWC -> NCHW here, once.
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x, dtype=np.float32)
    (inp,), (out,) = net.input_names(), net.output_names()
    logits = []
    for i in range(len(x)):
        with net.create_extractor() as extractor:
            # A batch-of-one Mat, cloned, as pnnx's own <name>_ncnn.py does; ncnn.Mat(x[i]) gave garbage.
            extractor.input(inp, ncnn.Mat(x[i:i + 1], batch_index=0).clone())
            _, y = extractor.extract(out)
            logits.append(np.array(y.numpy(batch_index=0)).reshape(-1))
    return np.stack(logits)


# ncnn layer -> (weight-size key, bias key, bias-count key); weights are tagged blobs, biases raw float32
_NCNN_WEIGHTED = {
    "Convolution": (6, 5, 0), "ConvolutionDepthWise": (6, 5, 0), "Deconvolution": (6, 5, 0),
    "DeconvolutionDepthWise": (6, 5, 0), "Convolution1D": (6, 5, 0), "InnerProduct": (2, 1, 0),
}
_NCNN_FP16_TAG, _NCNN_INT8_TAG = 0x01306B47, 0x000D4B38


def ncnn_weights(model: NcnnModel) -> list[np.ndarray] | None:
    """Decode the .bin using the param file; None when it holds layers or encodings this does not know."""
    blob, offset, weights = model.weights, 0, []

    def take(count: int, dtype, tagged: bool) -> np.ndarray:
        nonlocal offset
        if tagged:
            tag = int.from_bytes(blob[offset:offset + 4], "little")
            offset += 4
            if tag == _NCNN_FP16_TAG:
                dtype = np.float16
            elif tag != 0:
                raise ValueError(f"unsupported ncnn weight encoding {tag:#x}")
        size = count * np.dtype(dtype).itemsize
        values = np.frombuffer(blob, dtype, count, offset).astype(np.float32)
        offset += (size + 3) // 4 * 4
        return values

    try:
        for line in model.param.decode().splitlines()[2:]:
            fields = line.split()
            if fields and fields[0] in _NCNN_WEIGHTED:
                n_in, n_out = int(fields[2]), int(fields[3])
                params = dict(kv.split("=", 1) for kv in fields[4 + n_in + n_out:])
                size_key, bias_key, count_key = _NCNN_WEIGHTED[fields[0]]
                weights.append(take(int(params[str(size_key)]), np.float32, tagged=True))
                if int(params.get(str(bias_key), 0)):
                    weights.append(take(int(params[str(count_key)]), np.float32, tagged=False))
    except (ValueError, KeyError, IndexError):
        return None
    return weights if offset == len(blob) else None


# --- MNN (.mnn; converted in a child process, see plugins/convert_mnn.py) -----------------


def mnn_interpreter(data: bytes):
    import MNN

    with tempfile.NamedTemporaryFile(suffix=".mnn") as tmp:
        tmp.write(data)
        tmp.flush()
        return MNN.Interpreter(tmp.name)


def load_mnn(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if mnn_dump(data) is None:
        raise ArtifactError(f"{path}: MNN cannot read the model (truncated or corrupt)")
    return data


def predict_mnn(data: bytes, x: np.ndarray, config: dict | None = None) -> np.ndarray:
    """One sample at a time through an MNN session (``config``: numThread, precision, power)."""
    import MNN

    interpreter = mnn_interpreter(data)
    session = interpreter.createSession({"numThread": 1, "precision": "high", **(config or {})})
    inp = interpreter.getSessionInput(session)
    shape = tuple(inp.getShape())
    if shape[1:] != x.shape[1:] and x.ndim == 4 and shape[1:] == (x.shape[3], x.shape[1], x.shape[2]):
        x = x.transpose(0, 3, 1, 2)  # an NCHW graph input (ONNX models exported channel-first)
    x = np.ascontiguousarray(x, dtype=np.float32)
    logits = []
    for i in range(len(x)):
        inp.copyFrom(MNN.Tensor(shape, MNN.Halide_Type_Float, x[i:i + 1], inp.getDimensionType()))
        interpreter.runSession(session)
        out = interpreter.getSessionOutput(session)
        host = MNN.Tensor(out.getShape(), MNN.Halide_Type_Float, np.zeros(out.getShape(), np.float32),
                          out.getDimensionType())
        out.copyToHostTensor(host)
        logits.append(np.array(host.getData(), np.float32).reshape(-1))
    return np.stack(logits)


def mnn_dump(data: bytes) -> dict | None:
    """The model as MNN's converter dumps it to JSON, or None if it cannot read it."""
    import json
    import re
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="slimlab-mnn-") as tmp:
        model, dump = Path(tmp) / "model.mnn", Path(tmp) / "model.json"
        model.write_bytes(data)
        result = subprocess.run(
            [sys.executable, "-c", MNN_CONVERT, "-f", "MNN", "--modelFile", str(model), "--JsonFile", str(dump)],
            capture_output=True, text=True, timeout=600,
        )
        if result.returncode != 0 or not dump.is_file():
            return None
        # MNN writes C's nan/inf spellings, which JSON does not have.
        text = re.sub(r"-?\bnan\b", "NaN", dump.read_text())
        return json.loads(re.sub(r"\b(-?)inf\b", r"\1Infinity", text))


def mnn_weights(data: bytes) -> list[np.ndarray] | None:
    """Float weights and biases of each op; None if any are quantised (packed buffers, not decoded here)."""
    weights = []
    for op in mnn_dump(data)["oplists"]:
        main = op.get("main")
        if not isinstance(main, dict):
            continue
        if "quanParameter" in main or "symmetricQuan" in main:
            return None
        weights += [np.asarray(main[key], np.float32) for key in ("weight", "bias") if isinstance(main.get(key), list)]
    return weights


# MNN's converter extension, called directly in a child Python: never the ``mnnconvert``
# console wrapper or MNN.tools (they import MNN.tools.utils.log: telemetry plus a runtime
# ``pip install``), and never beside TensorFlow (their protobuf descriptors clash and abort).
MNN_CONVERT = "import sys, _tools; sys.exit(0 if _tools.mnnconvert(['mnnconvert', *sys.argv[1:]]) else 1)"


FORMATS = {
    "keras": Format("keras", "model.keras", save_keras, load_keras, predict_keras, keras_weights),
    "tflite": Format("tflite", "model.tflite", write_bytes_to, load_tflite, predict_tflite, tflite_weights),
    "onnx": Format("onnx", "model.onnx", write_bytes_to, load_onnx, predict_onnx, onnx_weights),
    "ncnn": Format("ncnn", "model.ncnn.param", save_ncnn, load_ncnn, predict_ncnn, ncnn_weights,
                   extra_files=("model.ncnn.bin",)),
    "mnn": Format("mnn", "model.mnn", write_bytes_to, load_mnn, predict_mnn, mnn_weights),
}
