"""quantize.qat: quantization-aware training, then a full-integer int8 TFLite model.

tfmot inserts fake-quantize ops that simulate int8 rounding during a short
fine-tune, so the weights adapt to it; the converter then emits real int8
kernels. The learned ranges replace a representative data set.
"""

from typing import Literal

from pydantic import Field

from slimlab import hookimpl
from slimlab.kit.export import keras_to_tflite
from slimlab.stages import Stage, StageParams
from slimlab.kit.training import compile_and_fit


class QatParams(StageParams):
    epochs: int = Field(2, ge=1, le=10000, description="fine-tuning epochs with fake quantization")
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(1e-4, gt=0, le=10)
    io: Literal["int8", "float"] = Field("int8", description="int8: the model's input and output are int8 too")


def quantize_qat(artifact, params: QatParams, ctx) -> bytes:
    """Quantization-aware fine-tuning, then a full-integer int8 TFLite model."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    model = tfmot.quantization.keras.quantize_model(artifact.model)
    history = compile_and_fit(model, ctx.splits, epochs=params.epochs, batch_size=params.batch_size,
                              learning_rate=params.learning_rate, seed=ctx.seed)
    ctx.record(history=history)

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if params.io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    return keras_to_tflite(model, configure)


@hookimpl
def register_stages(register):
    register(Stage("quantize.qat", quantize_qat, QatParams, inputs=("keras",), output="tflite", traits=lambda params: {"integer"},
                   fine_tunes=True))
