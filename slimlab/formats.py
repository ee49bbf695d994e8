"""What slimlab knows about each model kind: file name, save, load, predict, weights.

Stages return plain model objects (a Keras model, TFLite bytes); the host uses
these handlers to store them and to measure size, parameters, sparsity and
accuracy the same way for every stage.
"""

import tempfile
import zipfile
from dataclasses import dataclass
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
    weights: Callable[[Any], list[np.ndarray]]


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


def save_tflite(data: bytes, path: Path) -> None:
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
    models count what is actually stored. A sparse tensor yields its stored
    values only, so its zeros do not count.
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
        return values.astype(np.float32)
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


FORMATS = {
    "keras": Format("keras", "model.keras", save_keras, load_keras, predict_keras, keras_weights),
    "tflite": Format("tflite", "model.tflite", save_tflite, load_tflite, predict_tflite, tflite_weights),
}
