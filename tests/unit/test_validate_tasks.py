"""``slimlab validate`` checks an imported model against the task and the data before anything runs (issue 22)."""

import numpy as np
import pytest
import yaml

from tests import zoo
from tests.support import REPO, slimlab


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate-tasks")
    zoo.save(zoo.two_head(), root / "models", "tflite")
    (root / "data").mkdir()
    zoo.two_head_data(root / "data/images.npz", n=60)
    labelled = np.load(root / "data/images.npz")["x"]
    np.savez(root / "data/labelled.npz", x=labelled, y=np.arange(len(labelled)) % 4)
    (root / "devices.yaml").write_text(yaml.safe_dump({"devices": {"here": {
        "transport": "local", "runner": "python", "runtimes": ["tflite"], "workdir": str(root / "lab")}}}))
    return root


def validate(root, task: dict | None, data: str, y_key: str | None = "y"):
    config = {"dataset": {"name": "npz", "params": {"path": f"data/{data}", "y_key": y_key}},
              "recipes": {"it": [{"import": {"path": "models/two_head.tflite"}}]}, "formats": ["tflite"],
              "lab": {"inventory": "devices.yaml", "devices": ["here"]}}
    if task is not None:
        config["task"] = task
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return slimlab("validate", str(root / "config.yaml"), cwd=root, env={"SLIMLAB_PLUGINS_DIR": str(REPO / "none")})


def one_line(done) -> str:
    """slimlab's one error line (LiteRT may print its own INFO line before it)."""
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("slimlab: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_a_two_output_model_under_classification_must_say_which_output(folder):
    line = one_line(validate(folder, None, "labelled.npz"))
    assert "models/two_head.tflite" in line and "the model has 2 outputs" in line and "task.params.output" in line


def test_a_task_that_needs_labels_refuses_data_without_them(folder):
    line = one_line(validate(folder, {"name": "detection", "params": {
        "decoder": "boxes", "boxes": "box", "scores": "class_logits", "layout": "xyxy"}}, "images.npz", None))
    assert "has no labels, and task 'detection' needs them" in line and "fidelity" in line


def test_an_output_the_model_lacks_is_named_with_those_it_has(folder):
    line = one_line(validate(folder, {"name": "classification", "params": {"output": "logits"}}, "labelled.npz"))
    assert "has no output 'logits'; its outputs:" in line


def test_the_same_model_and_data_pass_with_fidelity_or_the_right_output(folder):
    done = validate(folder, {"name": "fidelity"}, "images.npz", None)
    assert done.returncode == 0 and "task fidelity" in done.stdout and "no labels" in done.stdout, done.stderr
    done = validate(folder, {"name": "classification", "params": {"output": "class_logits"}}, "labelled.npz")
    assert done.returncode == 0 and "task classification" in done.stdout and "4 classes" in done.stdout, done.stderr
