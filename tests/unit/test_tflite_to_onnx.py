"""A TFLite model reaches ONNX and ncnn through tf2onnx; a quantized one is a known limit; ONNX has no TFLite path."""

import copy
import shutil

import onnx
import pytest
import yaml

from slimlab import config, recipes
from slimlab.artifacts import Artifact
from tests.support import DIGITS, REPO

CONVERTERS = ("convert.onnx", "convert.ncnn")


def step(stage: str, params: dict, parent, out):
    from slimlab.stages import run_step

    return run_step({"stage": stage, "params": params, "dataset": DIGITS}, parent, out / "artifact.json")


@pytest.fixture(scope="module")
def imported(tiny_artifacts, tmp_path_factory) -> dict:
    """The fixture's float TFLite model and an fp16-weight one, each written to a .tflite file and imported:
    their lineage is the import alone, so parity is judged by the float bounds."""
    root = tmp_path_factory.mktemp("tflite-import")
    fp16 = step("quantize.fp16", {}, tiny_artifacts["keras"].sidecar, root / "quantize.fp16")
    found = {}
    for name, made in {"fp32": tiny_artifacts["fp32"], "fp16": fp16}.items():
        path = root / f"{name}.tflite"
        shutil.copyfile(Artifact.load(made.sidecar).path, path)
        found[name] = step("import", {"path": str(path)}, None, root / name)
    return found


@pytest.fixture(scope="module")
def converted(imported, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tflite-converted")
    return {(name, stage): step(stage, {}, source.sidecar, root / name / stage)
            for name, source in imported.items() for stage in CONVERTERS}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp32", "fp16"])
@pytest.mark.parametrize("stage", CONVERTERS)
def test_a_float_tflite_model_converts_with_parity(imported, converted, name, stage):
    source = Artifact.load(imported[name].sidecar)
    assert source.kind == "tflite" and [s.stage for s in source.lineage] == ["import"]
    result = converted[name, stage]
    assert isinstance(result, Artifact) and result.info.status == "ok", result  # a failure returns its sidecar
    artifact = Artifact.load(result.sidecar)
    assert artifact.kind == stage.removeprefix("convert.")
    parity = artifact.info.metrics["parity"]
    assert parity["reference"] == "tflite" and parity["passed"], parity
    assert parity["agreement"] >= 0.995 and parity["max_abs_diff_rel"] <= 1e-3
    assert abs(artifact.info.accuracy["test"] - source.info.accuracy["test"]) <= 0.005


def test_the_onnx_graph_keeps_the_tflite_input_layout(imported, converted):
    source = Artifact.load(imported["fp32"].sidecar)
    model = Artifact.load(converted["fp32", "convert.onnx"].sidecar)
    assert model.format.input_spec(model.model) == source.format.input_spec(source.model) == {
        "shape": [None, 8, 8, 1], "dtype": "float32"}
    graph = onnx.load_from_string(model.model).graph
    assert {node.op_type for node in graph.node} >= {"Conv", "MatMul"}
    assert not {"QuantizeLinear", "DequantizeLinear"} & {node.op_type for node in graph.node}


@pytest.fixture(scope="module")
def refused(tiny_artifacts, tmp_path_factory) -> dict:
    """TFLite models tf2onnx does not convert faithfully: full int8, dynamic-range int8 weights, sparse tensors."""
    root, keras = tmp_path_factory.mktemp("tflite-refused"), tiny_artifacts["keras"].sidecar
    pruned = step("prune.magnitude", {"sparsity": 0.9, "epochs": 1}, keras, root / "pruned")
    return {"int8": tiny_artifacts["int8"], "dynamic": step("quantize.dynamic", {}, keras, root / "dynamic"),
            "sparse": step("convert.tflite", {"sparse": True}, pruned.sidecar, root / "sparse")}


@pytest.mark.parametrize("stage", CONVERTERS)
def test_a_quantized_or_sparse_tflite_model_is_unsupported_not_failed(refused, tmp_path, stage):
    why = {"int8": "a quantized TFLite model (integer tensors", "dynamic": "a quantized TFLite model (integer tensors",
           "sparse": "a TFLite model with sparse tensors (convert.tflite sparse: true) is not converted: tf2onnx"}
    for name, source in refused.items():
        result = step(stage, {}, source.sidecar, tmp_path / name)
        assert (result.status, result.format) == ("unsupported", stage.removeprefix("convert.")), name
        assert result.error.startswith(f"{stage}: {why[name]}") and "\n" not in result.error, result.error


def test_an_onnx_import_says_which_converter_to_tflite_is_missing_and_why(tiny_artifacts, tmp_path):
    from slimlab.kit.export import keras_to_onnx

    path = tmp_path / "model.onnx"
    path.write_bytes(keras_to_onnx(Artifact.load(tiny_artifacts["keras"].sidecar).model))
    cfg = copy.deepcopy(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    cfg.update(recipes={"mine": [{"import": {"path": str(path)}}]}, formats=["tflite", "onnx", "ncnn"])
    config.validate(cfg, "config.schema.yaml", "config")
    deployed = {d.format: d for d in recipes.build_plan(cfg).deployables}
    assert deployed["tflite"].artifact is None
    reason = deployed["tflite"].unsupported
    assert reason.startswith("convert.tflite does not take a onnx model: onnx2tf, the maintained ONNX to TFLite "
                             "converter, does not install beside slimlab's pins (")
    assert "tensorflow 2.19" in reason and "\n" not in reason
    assert deployed["onnx"].artifact == deployed["ncnn"].artifact.rpartition("/")[0]
    assert deployed["onnx"].unsupported is deployed["ncnn"].unsupported is None
