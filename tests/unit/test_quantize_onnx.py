"""quantize.onnx: ONNX Runtime's static int8 (QDQ) model, what it stores, that it agrees with the float model, and
the plan's refusal of the conversions that cannot take it."""

import copy
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper

from slimlab import config, formats, recipes, registry, tasks
from slimlab.errors import ConfigError, Unsupported
from slimlab.stages import run_step
from tests import zoo
from tests.support import DIGITS, REPO

ONNX = formats.get("onnx")


def quantize(model: bytes, x_train, x_test=None, **params):
    """Run the stage on ONNX bytes with a fake context; returns (int8 bytes, what it recorded)."""
    recorded = {}
    splits = SimpleNamespace(x_train=x_train, x_test=x_test, x_calibration=None)
    ctx = SimpleNamespace(splits=splits, record=recorded.update, task=tasks.task(None), seed=0)
    stage = registry.stages()["quantize.onnx"]
    return stage.run(SimpleNamespace(kind="onnx", model=model), stage.validate(params, "test"), ctx), recorded


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def two_head(tmp_path_factory):
    """zoo.two_head as tf2onnx makes it (NHWC input, two outputs), its data, and its int8 model."""
    folder = tmp_path_factory.mktemp("two_head")
    model = zoo.save(zoo.two_head(), folder, "onnx").read_bytes()
    with np.load(zoo.two_head_data(folder / "data.npz", n=160)) as data:
        x = data["x"]
    int8, recorded = quantize(model, x[:100], representative_samples=64)
    return SimpleNamespace(model=model, x_train=x[:100], x_test=x[100:], int8=int8, recorded=recorded)


def test_the_model_holds_qdq_nodes_and_int8_weights_and_keeps_its_inputs_and_outputs(two_head):
    ONNX.check(two_head.int8)
    graph, before = onnx.load_from_string(two_head.int8).graph, onnx.load_from_string(two_head.model).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8 = [t for t in graph.initializer if numpy_helper.to_array(t).dtype == np.int8 and np.prod(t.dims) >= 16]
    assert int8  # the weights (zero points are scalars or one per channel)
    assert [i.name for i in graph.input] == [i.name for i in before.input]
    assert [o.name for o in graph.output] == [o.name for o in before.output]
    assert ONNX.input_spec(two_head.int8) == ONNX.input_spec(two_head.model) == {
        "shape": [None, 16, 16, 3], "dtype": "float32"}  # NHWC, as slimlab's ONNX models are


def test_its_outputs_in_onnxruntime_agree_with_the_float_model(two_head):
    expected, actual = ONNX.predict(two_head.model, two_head.x_test), ONNX.predict(two_head.int8, two_head.x_test)
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].dtype == np.float32 and actual[name].shape == expected[name].shape
        assert cosine(expected[name], actual[name]) > 0.98, name


def test_it_records_what_it_quantized_and_how(two_head):
    import onnxruntime

    found = two_head.recorded["quantization"]
    nodes = [node.op_type for node in onnx.load_from_string(two_head.int8).graph.node]
    assert found["onnxruntime"] == onnxruntime.__version__
    assert found["calibration_samples"] == 64
    assert (found["quantize_linear"], found["dequantize_linear"]) == (nodes.count("QuantizeLinear"),
                                                                     nodes.count("DequantizeLinear"))
    assert found["int8_ops"]["Conv"] == 4 and found["int8_ops"]["Gemm"] == 3  # the three Dense layers, fused
    assert found["float_ops"] == {"Transpose": 1}  # NHWC to NCHW, before the first quantized tensor


def test_calibration_takes_at_most_the_training_split(two_head):
    _, recorded = quantize(two_head.model, two_head.x_train[:10], activations="int8", per_channel=False)
    assert recorded["quantization"]["calibration_samples"] == 10


def test_a_model_with_many_weights_gets_about_four_times_smaller(tmp_path):
    from slimlab.kit.export import keras_to_onnx
    from slimlab.kit.training import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input((16, 16, 3)), k.layers.Conv2D(16, 3, activation="relu"), k.layers.Flatten(),
                          k.layers.Dense(64, activation="relu"), k.layers.Dense(10)])
    float_model = keras_to_onnx(model)
    x = np.random.default_rng(0).uniform(0, 1, (40, 16, 16, 3)).astype(np.float32)
    int8, _ = quantize(float_model, x[:32], representative_samples=32)
    assert len(int8) < 0.3 * len(float_model)
    agreement = np.mean(np.argmax(model.predict(x[32:], verbose=0), -1)
                        == np.argmax(next(iter(ONNX.predict(int8, x[32:]).values())), -1))
    assert agreement >= 0.75  # 8 random images of an untrained model; its logits are close together


def test_an_opset_11_model_gets_per_channel_weights_at_opset_13(two_head, tmp_path):
    from slimlab.kit.export import keras_to_onnx

    old = keras_to_onnx(zoo.two_head(), 11)
    int8, _ = quantize(old, two_head.x_train, representative_samples=16)
    ONNX.check(int8)  # DequantizeLinear's axis is not in opset 11
    assert next(o.version for o in onnx.load_from_string(int8).opset_import if o.domain == "") == 13


def test_a_trained_classifier_keeps_its_predictions(tiny_artifacts, tmp_path):
    """Through run_step, as a recipe runs it: train → convert.onnx → quantize.onnx on the digits."""
    converted = run_step({"stage": "convert.onnx", "params": {}, "dataset": DIGITS}, tiny_artifacts["keras"].sidecar,
                         tmp_path / "onnx" / "artifact.json")
    int8 = run_step({"stage": "quantize.onnx", "params": {"representative_samples": 100}, "dataset": DIGITS},
                    converted.sidecar, tmp_path / "int8" / "artifact.json")
    assert int8.info.status == "ok" and int8.kind == "onnx"
    from slimlab.data import load_spec

    x = load_spec(DIGITS).x_test
    (expected,), (actual,) = ONNX.predict(converted.model, x).values(), ONNX.predict(int8.model, x).values()
    assert np.mean(np.argmax(expected, -1) == np.argmax(actual, -1)) >= 0.98
    assert int8.info.metrics["quantization"]["calibration_samples"] == 100
    assert abs(int8.info.accuracy["test"] - converted.info.accuracy["test"]) <= 0.02


def test_a_quantized_model_is_not_quantized_again(two_head):
    with pytest.raises(Unsupported, match=r"^quantize.onnx: the model is quantized already \(DequantizeLinear, "
                                          r"QuantizeLinear nodes\); quantize its float model$"):
        quantize(two_head.int8, two_head.x_train)


@pytest.mark.parametrize("params, message", [
    ({"representative_samples": 0}, "representative_samples: Input should be greater than or equal to 1"),
    ({"activations": "int16"}, "activations: Input should be 'uint8' or 'int8'"),
    ({"per_channel": "sometimes"}, "per_channel: Input should be a valid boolean"),
    ({"weights": "int4"}, "weights: Extra inputs are not permitted"),
])
def test_bad_params_are_named_in_one_line(params, message):
    with pytest.raises(ConfigError, match=message) as caught:
        registry.stages()["quantize.onnx"].validate(params, "recipes.r[2]")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("recipes.r[2]: invalid params")


def test_the_plan_refuses_ncnn_and_mnn_for_the_qdq_model_before_anything_runs():
    cfg = copy.deepcopy(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    cfg.update(recipes={"ort_int8": ["train", "convert.onnx", {"quantize.onnx": {"per_channel": False}}]},
               formats=["onnx", "ncnn", "mnn", "tflite"])
    config.validate(cfg, "config.schema.yaml", "config")
    plan = recipes.build_plan(cfg)
    deployed = {d.format: d for d in plan.deployables}
    assert deployed["onnx"].artifact == plan.recipes["ort_int8"][-1]
    assert deployed["onnx"].artifact.endswith("/convert.onnx/quantize.onnx@per_channel=false")
    assert plan.traits[deployed["onnx"].artifact] == {"integer"}
    for fmt, reason in (("ncnn", "convert.ncnn: a quantized TFLite model (integer tensors, as quantize.int8 and "
                                 "quantize.dynamic make) or ONNX model (quantize.onnx's "
                                 "QuantizeLinear/DequantizeLinear graph) is not converted: pnnx"),
                        ("mnn", "convert.mnn: MNN 3.6.1 cannot convert quantized TFLite models, nor quantize.onnx's "
                                "QuantizeLinear/DequantizeLinear ONNX ones")):
        assert deployed[fmt].artifact is None and deployed[fmt].unsupported.startswith(reason), deployed[fmt]
        assert "\n" not in deployed[fmt].unsupported
    assert deployed["tflite"].unsupported.startswith("convert.tflite does not take a onnx model")


def test_the_int8_models_weights_are_counted_as_its_dequantize_gives_them(two_head):
    float_weights, int8_weights = ONNX.weights(two_head.model), ONNX.weights(two_head.int8)
    # about as many (ONNX Runtime's pre-processing folds a few constants), not its scales and zero points too
    assert abs(sum(w.size for w in int8_weights) - sum(w.size for w in float_weights)) <= 0.01 * sum(
        w.size for w in float_weights)
    largest = max(float_weights, key=lambda w: w.size)
    closest = min((w for w in int8_weights if w.shape == largest.shape), key=lambda w: np.abs(w - largest).max())
    assert np.abs(closest - largest).max() <= np.abs(largest).max() / 100  # within int8 steps of the float one


@pytest.mark.parametrize("converter", ["convert.ncnn", "convert.mnn"])
def test_an_imported_qdq_model_is_unsupported_where_the_plan_could_not_know(two_head, converter):
    stage = registry.stages()[converter]
    with pytest.raises(Unsupported, match=f"^{converter}: .*QuantizeLinear/DequantizeLinear"):
        stage.run(SimpleNamespace(kind="onnx", model=two_head.int8, lineage=[]), stage.validate({}, "test"), None)
