"""Exporting a tf_keras model to TFLite and ONNX, through a SavedModel.

``TFLiteConverter.from_keras_model`` fails on tf_keras models under TF 2.21, so
both go through ``model.save(..., save_format="tf")`` first.
"""

import tempfile
from typing import Any, Callable


def keras_to_tflite(model, configure: Callable[[Any], None] = lambda converter: None) -> bytes:
    """A TFLite flatbuffer; ``configure(converter)`` sets optimisations, calibration data, I/O types."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="slimlab-savedmodel-") as saved:
        model.save(saved, save_format="tf")
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        configure(converter)
        return converter.convert()


def keras_to_onnx(model, opset: int = 13) -> bytes:
    """An ONNX model (tf2onnx); the input stays NHWC like Keras."""
    from tf2onnx import convert, tf_loader

    with tempfile.TemporaryDirectory(prefix="slimlab-savedmodel-") as saved:
        model.save(saved, save_format="tf")
        graph_def, inputs, outputs = tf_loader.from_saved_model(saved, None, None)
    proto, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset)
    return proto.SerializeToString()
