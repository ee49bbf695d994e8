"""Session-wide test setup, and tiny real artifacts built once with the real stages on the digits data set."""

import os

import pytest

# tfmot needs Keras 2 (tf_keras); set before any test imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support import DIGITS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """Used by unit tests and by lab tests (which bench them on real peers)."""
    from slimlab.stages import run_step

    root = tmp_path_factory.mktemp("artifacts")

    def step(stage, params, parent, name):
        return run_step({"stage": stage, "params": params, "dataset": DIGITS}, parent, root / name / "artifact.json")

    keras = step("train", {"epochs": 6, "batch_size": 32, "model_params": {"width": 8, "dense": 32}}, None, "train")
    fp32 = step("convert.tflite", {}, keras.sidecar, "fp32")
    int8 = step("quantize.int8", {"representative_samples": 50}, keras.sidecar, "int8")
    return {"keras": keras, "fp32": fp32, "int8": int8}
