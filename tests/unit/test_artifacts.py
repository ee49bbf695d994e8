"""Artifacts: sidecar contents, verification, and clear errors for truncated or corrupt files."""

import json
import shutil

import numpy as np
import pytest

from slimlab.artifacts import Artifact
from slimlab.errors import ArtifactError
from slimlab import formats
from slimlab.kit.export import keras_to_tflite
from tests.support import DIGITS, slimlab


def copy_artifact(artifact, tmp_path):
    target = tmp_path / artifact.dir.name
    shutil.copytree(artifact.dir, target)
    return target


def test_sidecar_records_lineage_size_params_and_accuracy(tiny_artifacts):
    info = tiny_artifacts["int8"].info
    assert [step.stage for step in info.lineage] == ["train", "quantize.int8"]
    assert info.lineage[1].params == {"representative_samples": 50, "io": "int8"}
    assert info.size.bytes == tiny_artifacts["int8"].path.stat().st_size
    assert 0 < info.size.gzip_bytes < info.size.bytes
    assert info.dataset["sizes"] == {"train": 1259, "val": 179, "test": 359}
    assert 0.5 < info.accuracy["test"] <= 1.0
    assert "history" in tiny_artifacts["keras"].info.metrics


def test_tflite_counts_the_same_params_as_keras(tiny_artifacts):
    keras_count = tiny_artifacts["keras"].info.params.count
    assert keras_count == tiny_artifacts["keras"].model.count_params()
    assert tiny_artifacts["fp32"].info.params.count == keras_count
    assert tiny_artifacts["int8"].info.params.count == keras_count


def test_int8_is_smaller_and_close_in_accuracy(tiny_artifacts):
    fp32, int8 = tiny_artifacts["fp32"].info, tiny_artifacts["int8"].info
    assert int8.size.bytes < 0.6 * fp32.size.bytes
    assert abs(int8.accuracy["test"] - fp32.accuracy["test"]) < 0.05
    assert fp32.accuracy["test"] == pytest.approx(tiny_artifacts["keras"].info.accuracy["test"], abs=0.01)


def test_sparsity_counts_real_zeros(tiny_artifacts, tmp_path):
    model = formats.get("keras").load(tiny_artifacts["keras"].dir)  # a copy: the shared fixture stays intact
    weights = model.get_weights()
    kernel = weights[0].copy()
    kernel.flat[: kernel.size // 2] = 0.0
    model.set_weights([kernel, *weights[1:]])
    expected = sum(int(np.count_nonzero(w == 0)) for w in model.get_weights())
    counted = sum(int(np.count_nonzero(w == 0)) for w in formats.get("tflite").weights(keras_to_tflite(model)))
    assert counted == expected >= kernel.size // 2


def test_truncated_model_file_is_reported(tiny_artifacts, tmp_path):
    copy = copy_artifact(tiny_artifacts["fp32"], tmp_path)
    model = copy / "model.tflite"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"model.tflite: model file is 1000 bytes, sidecar says \d+ \(truncated\?\)"):
        Artifact.load(copy / "artifact.json")


def test_corrupt_model_file_is_reported(tiny_artifacts, tmp_path):
    copy = copy_artifact(tiny_artifacts["keras"], tmp_path)
    model = copy / "model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 does not match its sidecar"):
        Artifact.load(copy / "artifact.json")


def test_missing_or_broken_sidecar_is_reported(tmp_path):
    with pytest.raises(ArtifactError, match="artifact sidecar not found"):
        Artifact.load(tmp_path / "artifact.json")
    (tmp_path / "artifact.json").write_text('{"kind": "tfl')
    with pytest.raises(ArtifactError, match="sidecar is not valid JSON"):
        Artifact.load(tmp_path / "artifact.json")


@pytest.mark.parametrize("kind, junk, message", [
    ("tflite", b"\x00" * 64, r"model.tflite: not a valid tflite model .*no 'TFL3' flatbuffer identifier"),
    # The identifier is there, so LiteRT itself gets to refuse it.
    ("tflite", b"\x1c\x00\x00\x00TFL3" + b"\x00" * 20, r"model.tflite: not a valid tflite model .*not a valid Flatbuffer"),
    ("keras", b"PK\x03\x04 truncated zip", r"model.keras: not a Keras .keras archive"),
])
def test_garbage_model_files_give_clear_errors(tmp_path, kind, junk, message):
    fmt = formats.get(kind)
    fmt.paths(tmp_path)[0].write_bytes(junk)
    with pytest.raises(ArtifactError, match=message):
        fmt.load(tmp_path)


def test_run_step_on_a_truncated_input_fails_in_one_line(tiny_artifacts, tmp_path):
    copy = copy_artifact(tiny_artifacts["keras"], tmp_path)
    (copy / "model.keras").write_bytes((copy / "model.keras").read_bytes()[:500])
    step = {"stage": "convert.tflite", "params": {}, "dataset": DIGITS}
    done = slimlab("run-step", "--step", json.dumps(step), "--input", str(copy / "artifact.json"),
                   "--output", str(tmp_path / "out" / "artifact.json"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("slimlab: error: ")
    assert "model.keras: model file is 500 bytes" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "artifact.json").exists()
