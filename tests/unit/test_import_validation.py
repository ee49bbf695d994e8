"""`import: {path: ...}` opens the model file when the config loads: a file that is not the model its name
says is one line from `slimlab validate`, not a failure deep in the run. TFLite and ONNX files are opened by
their runtimes, Keras ones looked into, and nothing imports TensorFlow.

Every test fails on the old code, which took any file without a suffix for a SavedModel folder and checked
only a .keras file's config (with its own wording) when the config loaded.
"""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from slimlab import cli

EXPECTED_KINDS = "give a .keras, .h5, .tflite or .onnx file, or a SavedModel folder"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A folder with small npz data, an inventory, and a tiny TFLite and ONNX model (made once, not trained)."""
    root = tmp_path_factory.mktemp("import_validation")
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.random((60, 8, 8, 1), np.float32), y=np.arange(60) % 3)
    (root / "devices.yaml").write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "runner": "python", "runtimes": ["tflite"], "workdir": str(root / "lab")}}}))
    weights = rng.random((64, 3), np.float32)
    (root / "tiny.tflite").write_bytes(tiny_tflite(weights))
    (root / "tiny.onnx").write_bytes(tiny_onnx(weights))
    return root


def tiny_tflite(weights: np.ndarray) -> bytes:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def logits(x):
        return tf.matmul(tf.reshape(x, [1, 64]), weights)

    return tf.lite.TFLiteConverter.from_concrete_functions([logits.get_concrete_function()], logits).convert()


def tiny_onnx(weights: np.ndarray) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.array([1, 64], np.int64), "shape"), numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)  # onnxruntime runs 8
    return model.SerializeToString()


def config(lab, folder, model) -> str:
    """A config whose one recipe imports ``model``."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "formats": ["tflite"], "lab": {"inventory": str(lab / "devices.yaml"), "devices": ["localhost"]},
        "bench": {"option_sets": {"default": {}}},
        "dataset": {"name": "npz", "params": {"path": str(lab / "data.npz")}},
        "recipes": {"mine": [{"import": {"path": str(model)}}]},
    }))
    return str(path)


def validate(lab, tmp_path, capsys, model) -> tuple[int, str]:
    """``slimlab validate`` (in this process) on a config importing ``model``: its exit code and stderr."""
    path = config(lab, tmp_path, model)
    capsys.readouterr()
    code = cli.main(["validate", path])
    return code, capsys.readouterr().err


def refused(message: str) -> str:
    """The error line (without its newline) for an import whose path is refused with ``message``."""
    return f"slimlab: error: recipes.mine[0]: invalid params for stage 'import': path: {message}"


def test_a_file_without_a_model_suffix_is_refused_and_a_missing_one_named(lab, tmp_path, capsys):
    # Old: accepted (a path without a suffix was taken for a SavedModel folder); the run failed much later
    # with "not a .keras archive".
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert validate(lab, tmp_path, capsys, passwd) == (
        2, refused(f"{passwd} is not a model file slimlab can import: {EXPECTED_KINDS}") + "\n")
    assert validate(lab, tmp_path, capsys, tmp_path / "nowhere") == (
        2, f"slimlab: error: recipes.mine[0]: import.path: {tmp_path / 'nowhere'} does not exist\n")


@pytest.mark.parametrize("name, expected", [
    ("model.tflite", "not a valid tflite model: no 'TFL3' flatbuffer identifier"),
    ("model.onnx", "not a valid onnx model: Error parsing message"),  # onnx's reason follows
    ("model.keras", "not a .keras archive (a zip holding config.json)"),
    ("model.h5", "not a Keras .h5 file (HDF5)"),
])
def test_a_text_file_named_as_a_model_is_refused_in_one_line(name, expected, lab, tmp_path, capsys):
    # Old: the .tflite, .onnx and .h5 were accepted and failed when the step ran; the .keras was refused as
    # "not a .keras archive (not a zip; truncated or corrupt?)", without saying what the file is.
    model = tmp_path / name
    model.write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, err = validate(lab, tmp_path, capsys, model)
    assert code == 2 and err.startswith(refused(f"{model} is a text file, {expected}")), err
    assert err.count("\n") == 1


def test_a_folder_without_saved_model_pb_is_refused_in_one_line(lab, tmp_path, capsys):
    # Old: accepted as a SavedModel folder.
    folder = tmp_path / "saved"
    folder.mkdir()
    assert validate(lab, tmp_path, capsys, folder) == (
        2, refused(f"{folder} is an empty folder, not a SavedModel folder") + "\n")
    (folder / "variables").mkdir()
    assert validate(lab, tmp_path, capsys, folder) == (
        2, refused(f"{folder} is a folder without saved_model.pb, not a SavedModel folder") + "\n")


@pytest.mark.parametrize("name, found", [("tiny.tflite", "a TFLite flatbuffer, not a valid tflite model: "),
                                         ("tiny.onnx", "binary data, not a valid onnx model: ")])
def test_a_model_is_opened_by_its_runtime_without_tensorflow(name, found, lab, tmp_path):
    # Old: a cut-off copy was accepted; it failed when the step ran.
    script = ("import sys; from slimlab import cli; code = cli.main(sys.argv[1:]); "
              "print(code, 'tensorflow' in sys.modules)")

    def validate_alone(model) -> subprocess.CompletedProcess:  # a fresh interpreter: this one has TensorFlow
        return subprocess.run([sys.executable, "-c", script, "validate", config(lab, tmp_path, model)],
                              capture_output=True, text=True, timeout=120)

    done = validate_alone(lab / name)
    assert done.stdout.splitlines()[-1] == "0 False", done.stderr[-2000:]
    cut = tmp_path / name
    cut.write_bytes((lab / name).read_bytes()[:200])
    done = validate_alone(cut)
    errors = done.stderr.splitlines()
    assert done.stdout.splitlines()[-1] == "2 False" and len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith(refused(f"{cut} is {found}")), errors[0]  # the runtime's reason follows
