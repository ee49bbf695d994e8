"""onnx: an ONNX model, run by onnxruntime on the host and on devices; and its ``convert.onnx`` stage.

``convert.onnx`` exports a Keras model with tf2onnx through a SavedModel; the graph
keeps Keras' NHWC input. onnxruntime takes no runtime options here.
"""

from pathlib import Path

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.atomic import write_bytes
from slimlab.errors import ArtifactError
from slimlab.formats import Format, builtin_adapter
from slimlab.kit import parity
from slimlab.kit.export import keras_to_onnx
from slimlab.stages import Stage, StageParams


class OnnxFormat(Format):
    name = "onnx"
    files = ("model.onnx",)
    runtime_adapter = builtin_adapter("onnx")

    def save(self, model: bytes, folder: Path) -> None:
        write_bytes(self.paths(folder)[0], model)

    def load(self, folder: Path) -> bytes:
        import onnx

        path = self.paths(folder)[0]
        data = path.read_bytes()
        try:
            onnx.checker.check_model(onnx.load_from_string(data))
        except Exception as exc:  # onnx raises DecodeError, ValidationError and others for a bad file
            raise ArtifactError(f"{path}: not a valid ONNX model (truncated or corrupt): {exc}") from exc
        return data

    def predict(self, model: bytes, x: np.ndarray) -> np.ndarray:
        import onnxruntime

        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        x = x.astype(np.float32)
        if isinstance(feed.shape[0], int):  # batch fixed (to 1) in the graph: one sample at a time
            return np.concatenate([session.run(None, {feed.name: x[i:i + 1]})[0] for i in range(len(x))])
        return session.run(None, {feed.name: x})[0]

    def weights(self, model: bytes) -> list[np.ndarray]:
        """Float initializers: the weights and biases (integer ones are shapes and axes)."""
        import onnx
        from onnx import numpy_helper

        arrays = (numpy_helper.to_array(t) for t in onnx.load_from_string(model).graph.initializer)
        return [a.astype(np.float32) for a in arrays if np.issubdtype(a.dtype, np.floating)]


class ConvertParams(StageParams):
    opset: int = Field(13, ge=11, le=21, description="ONNX opset to target")


def convert_onnx(artifact, params: ConvertParams, ctx) -> bytes:
    """ONNX model (tf2onnx from a SavedModel); parity with the Keras model is recorded."""
    model = keras_to_onnx(artifact.model, params.opset)
    parity.record(ctx, artifact, OnnxFormat(), model)
    return model


@hookimpl
def register_formats(register):
    register(OnnxFormat())


@hookimpl
def register_stages(register):
    register(Stage("convert.onnx", convert_onnx, ConvertParams, inputs=("keras",), output="onnx"))
