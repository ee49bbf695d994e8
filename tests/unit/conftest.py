"""Tiny real artifacts, built once per session with the real stages on the digits data set."""

import pytest

DIGITS = {"name": "digits", "seed": 7, "val_fraction": 0.1, "test_fraction": 0.2}


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    from slimlab.stages import run_step

    root = tmp_path_factory.mktemp("artifacts")

    def step(stage, params, parent, name):
        return run_step({"stage": stage, "params": params, "dataset": DIGITS}, parent, root / name / "artifact.json")

    keras = step("train", {"epochs": 6, "batch_size": 32, "model_params": {"width": 8, "dense": 32}}, None, "train")
    fp32 = step("convert.tflite", {}, keras.sidecar, "fp32")
    int8 = step("quantize.int8", {"representative_samples": 50}, keras.sidecar, "int8")
    return {"keras": keras, "fp32": fp32, "int8": int8}
