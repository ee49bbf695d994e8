"""Exporting a tf_keras model to TFLite and ONNX, from its traced inference function.

``TFLiteConverter.from_keras_model`` fails on tf_keras models under TF 2.21. Both
converters take the model's concrete function instead: the same graph a SavedModel
round trip would give (the converted models compute the same outputs), without
writing and reading one, which cost about 0.8 s a conversion.
"""

from typing import Any, Callable


def inference_function(model):
    """``model(x, training=False)`` traced for any batch size, with the model's variables."""
    import tensorflow as tf

    (tensor,) = model.inputs
    spec = tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name="input")

    def infer(x):
        return model(x, training=False)

    return tf.function(infer, autograph=False).get_concrete_function(spec)


def keras_to_tflite(model, configure: Callable[[Any], None] = lambda converter: None) -> bytes:
    """A TFLite flatbuffer; ``configure(converter)`` sets optimisations, calibration data, I/O types."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([inference_function(model)], model)
    configure(converter)
    return converter.convert()


def keras_to_onnx(model, opset: int = 13) -> bytes:
    """An ONNX model (tf2onnx); the input stays NHWC like Keras."""
    from tf2onnx import convert, tf_loader

    function = inference_function(model)
    inputs = [tensor.name for tensor in function.inputs if tensor.dtype != "resource"]
    outputs = [tensor.name for tensor in function.outputs]
    graph_def = tf_loader.from_function(function, inputs, outputs)
    proto, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset)
    return proto.SerializeToString()
