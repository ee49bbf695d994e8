"""The quantize stages: what they store, that LiteRT runs them, and that accuracy is measured."""

import numpy as np
import pytest

from slimlab import formats
from slimlab.data import load_spec
from slimlab.errors import ConfigError
from slimlab.plugins.formats.tflite import interpreter_class
from slimlab.registry import stages
from slimlab.stages import run_step
from tests.support import DIGITS


def tensor_dtypes(model: bytes) -> set:
    interpreter = interpreter_class()(model_content=model)
    return {np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}


@pytest.fixture(scope="module")
def quantized(tiny_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    params = {"quantize.dynamic": {}, "quantize.fp16": {}, "quantize.qat": {"epochs": 1}}
    return {
        name: run_step({"stage": name, "params": p, "dataset": DIGITS}, tiny_artifacts["keras"].sidecar,
                       root / name / "artifact.json")
        for name, p in params.items()
    }


def test_dynamic_stores_int8_weights_with_float_activations(quantized, tiny_artifacts):
    model = quantized["quantize.dynamic"].model
    dtypes = tensor_dtypes(model)
    assert np.dtype(np.int8) in dtypes and np.dtype(np.float32) in dtypes
    detail = interpreter_class()(model_content=model).get_input_details()[0]
    assert detail["dtype"] == np.float32
    assert quantized["quantize.dynamic"].info.size.bytes < 0.6 * tiny_artifacts["fp32"].info.size.bytes


def test_fp16_stores_half_precision_weights(quantized, tiny_artifacts):
    assert np.dtype(np.float16) in tensor_dtypes(quantized["quantize.fp16"].model)
    fp16, fp32 = quantized["quantize.fp16"].info, tiny_artifacts["fp32"].info
    assert fp16.size.bytes < 0.75 * fp32.size.bytes
    assert fp16.accuracy["test"] == pytest.approx(fp32.accuracy["test"], abs=0.01)


def test_qat_gives_int8_io_and_keeps_accuracy(quantized, tiny_artifacts):
    artifact = quantized["quantize.qat"]
    detail = interpreter_class()(model_content=artifact.model).get_input_details()[0]
    assert detail["dtype"] == np.int8
    assert artifact.info.lineage[-1].params["epochs"] == 1
    assert len(artifact.info.metrics["history"]["loss"]) == 1
    assert artifact.info.accuracy["test"] > tiny_artifacts["keras"].info.accuracy["test"] - 0.05


def test_quantized_accuracy_is_measured_in_litert(quantized):
    splits = load_spec(DIGITS)
    for artifact in quantized.values():
        (logits,) = formats.get("tflite").predict(artifact.model, splits.x_test).values()
        predicted = np.argmax(logits, -1)
        assert artifact.info.accuracy["test"] == pytest.approx(float(np.mean(predicted == splits.y_test)))


@pytest.mark.parametrize("name, params, message", [
    ("quantize.qat", {"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
    ("quantize.qat", {"io": "uint8"}, "io: Input should be 'int8' or 'float'"),
    ("quantize.fp16", {"bits": 16}, "bits: Extra inputs are not permitted"),
])
def test_bad_params_are_named(name, params, message):
    with pytest.raises(ConfigError, match=message):
        stages()[name].validate(params, "recipes.r[1]")
