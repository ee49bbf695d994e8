"""convert.onnx / convert.ncnn / convert.mnn: accuracy in each runtime, parity, layout, failures."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from slimlab import formats, registry, tasks
from slimlab.artifacts import Artifact, read_sidecar
from slimlab.errors import ArtifactError
from slimlab.stages import mark_failed
from tests.support import DIGITS

FAITHFUL = [("convert.onnx", "keras"), ("convert.ncnn", "keras"), ("convert.mnn", "keras"), ("convert.mnn", "fp32")]
CONVERTERS = FAITHFUL


@pytest.fixture(scope="module")
def converted(tiny_artifacts, tmp_path_factory):
    from slimlab.stages import run_step

    root = tmp_path_factory.mktemp("converted")
    return {
        (stage, source): run_step({"stage": stage, "params": {}, "dataset": DIGITS},
                                  tiny_artifacts[source].sidecar, root / f"{stage}-{source}" / "artifact.json")
        for stage, source in CONVERTERS
    }


@pytest.mark.slow
@pytest.mark.parametrize("stage, source", FAITHFUL)
def test_conversion_records_parity_and_its_own_accuracy(converted, tiny_artifacts, stage, source):
    artifact = Artifact.load(converted[stage, source].sidecar)
    parity = artifact.info.metrics["parity"]
    assert parity["samples"] == artifact.info.dataset["sizes"]["test"]
    assert parity["passed"], parity
    assert parity["agreement"] >= 0.995 and parity["max_abs_diff_rel"] <= 1e-3
    # Accuracy comes from the converted model run in its own runtime, on the stored files.
    fmt = artifact.format
    from slimlab.data import load_spec

    splits = load_spec(DIGITS)
    (logits,) = fmt.predict(fmt.load(artifact.dir), splits.x_test).values()
    predicted = np.argmax(logits.reshape(len(logits), -1), -1)  # ncnn adds an axis to each output
    assert artifact.info.accuracy["test"] == pytest.approx(np.mean(predicted == splits.y_test))
    source_accuracy = tiny_artifacts[source].info.accuracy["test"]
    assert abs(artifact.info.accuracy["test"] - source_accuracy) <= 0.01


def test_quantized_tflite_to_mnn_is_unsupported_not_failed(tiny_artifacts, tmp_path):
    """MNN 3.6.1 reads int8 scales as NaN or crashes on quantized TFLite: a known limit, recorded as such."""
    from slimlab import report
    from slimlab.lab import bench
    from slimlab.stages import run_step
    from tests.support import bench_block, local_device

    sidecar = tmp_path / "mnn" / "artifact.json"
    result = run_step({"stage": "convert.mnn", "params": {}, "dataset": DIGITS}, tiny_artifacts["int8"].sidecar,
                      sidecar)
    assert (result.status, result.format) == ("unsupported", "mnn")
    assert result.error.startswith("convert.mnn: MNN 3.6.1 cannot convert quantized TFLite models")
    below = run_step({"stage": "convert.mnn", "params": {"fp16": True}, "dataset": DIGITS}, sidecar,
                     tmp_path / "below" / "artifact.json")  # a step below it is not run, and not a failure either
    assert below.status == "unsupported" and below.error.startswith("skipped: convert.mnn: MNN 3.6.1")
    record = bench.run(local_device(tmp_path / "device", runtimes=["mnn"]), sidecar, 1, bench_block(),
                       tmp_path / "record.json")
    assert record.status == "skipped" and record.error.startswith("the artifact is unsupported: convert.mnn")
    table = report.rows([{"recipe": "int8", "format": "mnn", "sidecar": str(sidecar), "records": []}])
    assert (table["status"].iloc[0], table["error"].iloc[0]) == ("unsupported", result.error)
    summary = tmp_path / "summary.parquet"
    table.to_parquet(summary)
    assert report.failed_steps(summary) == []  # the run does not fail for it


def test_parity_flags_a_conversion_that_changed_the_model(tiny_artifacts):
    from slimlab.data import load_spec
    from slimlab.kit import parity

    keras, source = formats.get("keras"), tiny_artifacts["keras"]
    wrong = keras.load(source.dir)
    wrong.set_weights([np.random.default_rng(0).permutation(w.ravel()).reshape(w.shape) for w in wrong.get_weights()])
    x = load_spec(DIGITS).x_test

    def compare(model):  # against the source's logits, cached beside it when it was made
        return parity.compare(source.test_outputs, keras.predict(model, x), quantized=False, reference="keras",
                              task=tasks.task(None))

    result = compare(wrong)
    assert not result["passed"] and result["agreement"] < 0.98
    same = compare(keras.load(source.dir))
    assert same["passed"] and same["agreement"] == 1.0 and same["max_abs_diff_rel"] == 0.0
    assert [found["snr_db"] for found in same["outputs"].values()] == [float("inf")]


@pytest.mark.slow
def test_ncnn_artifact_keeps_both_files_and_counts_real_weights(converted, tiny_artifacts):
    artifact = converted["convert.ncnn", "keras"]
    assert sorted(artifact.info.files) == ["model.ncnn.bin", "model.ncnn.param", "outputs.test.npz"]
    assert [p.name for p in artifact.paths] == ["model.ncnn.param", "model.ncnn.bin"]
    assert artifact.info.params.count == tiny_artifacts["keras"].info.params.count
    (artifact.dir / "model.ncnn.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError, match="model.ncnn.bin"):
        Artifact.load(artifact.sidecar)


def _random_model(input_shape):
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    layers = tf_keras.layers
    return tf_keras.Sequential([
        layers.Input(input_shape),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(6, (3, 5), activation="relu"),
        layers.Flatten(),  # NHWC flatten order: a transposed input would scramble the dense weights
        layers.Dense(10),
    ])


@pytest.mark.parametrize("stage", ["convert.tflite", "convert.onnx", "convert.ncnn", "convert.mnn"])
def test_non_square_rgb_input_is_not_transposed(stage):
    """20x28x3: an H/W swap or a missing NHWC->NCHW transpose changes the logits."""
    x = np.random.default_rng(0).random((32, 20, 28, 3), dtype=np.float32)
    model = _random_model((20, 28, 3))
    source = SimpleNamespace(kind="keras", model=model, lineage=[], test_outputs=formats.get("keras").predict(model, x))
    recorded = {}
    ctx = SimpleNamespace(splits=SimpleNamespace(x_test=x), record=recorded.update, task=tasks.task(None))
    found = registry.stages()[stage]
    found.run(source, found.params(), ctx)
    parity = recorded["parity"]
    assert parity["max_abs_diff_rel"] <= 1e-3, parity
    assert parity["agreement"] >= 0.995


def test_zero_padding_before_convolutions_reaches_ncnn():
    """MobileNetV2's ZeroPadding2D before a stride-2 convolution, at the input (a Pad in NHWC between Transposes
    in ONNX) and inside the network (a Pad in NCHW): folded into the convolutions (ncnn has no Pad layer)."""
    import tf_keras

    layers = tf_keras.layers
    tf_keras.utils.set_random_seed(5)
    model = tf_keras.Sequential([
        layers.Input((17, 19, 3)),
        layers.ZeroPadding2D(((0, 1), (2, 1))),
        layers.Conv2D(6, 3, strides=2, activation="relu"),
        layers.ZeroPadding2D(((1, 0), (0, 1))),
        layers.DepthwiseConv2D(3, strides=2),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10),
    ])
    x = np.random.default_rng(1).random((32, 17, 19, 3), dtype=np.float32)
    source = SimpleNamespace(kind="keras", model=model, lineage=[], test_outputs=formats.get("keras").predict(model, x))
    recorded = {}
    ctx = SimpleNamespace(splits=SimpleNamespace(x_test=x), record=recorded.update, task=tasks.task(None))
    found = registry.stages()["convert.ncnn"]
    converted = found.run(source, found.params(), ctx)
    assert not re.search(rb"^Pad ", converted.param, re.M) and recorded["parity"]["max_abs_diff_rel"] <= 1e-3, recorded["parity"]


def test_corrupt_model_gives_a_converter_error(tmp_path):
    garbage = SimpleNamespace(kind="onnx", model=b"this is not an onnx model", lineage=[])
    ctx = SimpleNamespace(splits=SimpleNamespace(x_test=np.zeros((1, 8, 8, 1), np.float32)), record=dict,
                          task=tasks.task(None))
    for stage in ("convert.mnn", "convert.ncnn"):
        found = registry.stages()[stage]
        with pytest.raises(ArtifactError, match=rf"^{stage}: "):
            found.run(garbage, found.params(), ctx)


def test_failed_conversion_leaves_a_readable_failed_sidecar(tiny_artifacts, tmp_path):
    sidecar = tmp_path / "artifact.json"
    step = {"stage": "convert.mnn", "params": {"fp16": False, "weight_quant_bits": 0}, "dataset": DIGITS}
    mark_failed(step, tiny_artifacts["fp32"].sidecar, sidecar, "convert.mnn: MNN's converter failed")
    failed = read_sidecar(sidecar)
    assert (failed.status, failed.error) == ("failed", "convert.mnn: MNN's converter failed")
    assert json.loads(sidecar.read_text())["lineage"][-1]["stage"] == "convert.mnn"
    ok = read_sidecar(tiny_artifacts["fp32"].sidecar)
    assert (ok.status, ok.error) == ("ok", None)
    with pytest.raises(ArtifactError, match="this step is failed: convert.mnn: MNN's converter failed"):
        Artifact.load(sidecar)


def test_report_shows_failed_conversions_and_parity(tiny_artifacts, tmp_path):
    from slimlab import report

    failed = tmp_path / "artifact.json"
    step = {"stage": "convert.mnn", "params": {}, "dataset": DIGITS}
    mark_failed(step, tiny_artifacts["fp32"].sidecar, failed, "convert.mnn: MNN's converter failed")
    table = report.rows([
        {"recipe": "broken", "format": "mnn", "sidecar": str(failed), "records": []},
        {"recipe": "baseline", "format": "tflite", "sidecar": str(tiny_artifacts["fp32"].sidecar), "records": []},
    ]).set_index("recipe")
    assert table.loc["broken", "status"] == "convert_failed"
    assert table.loc["broken", "error"] == "convert.mnn: MNN's converter failed"
    assert table.loc["baseline", "parity_failed"] == False  # noqa: E712 (a numpy bool)
    assert table.loc["baseline", "parity_agreement"] >= 0.995
