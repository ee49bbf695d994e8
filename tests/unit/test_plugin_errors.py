"""A plugin's bug fails its step or record with the exception's own message, with and without the zygotes."""

import json

import pytest
import yaml

from slimlab.artifacts import read_sidecar
from slimlab.records import BenchFailure, failure_note_path
from tests.support import DIGITS, bench_block, slimlab

BUG = "keras_to_tflite() got an unexpected keyword argument 'optimizations'"
PLUGIN = f'''
from slimlab.api import PythonRunner, Stage, hookimpl


def convert(artifact, params, ctx):
    raise TypeError("{BUG}")


class BrokenRunner(PythonRunner):
    name = "broken"

    def measure(self, artifact, threads, settings):
        raise TypeError("{BUG}")


@hookimpl
def register_stages(register):
    register(Stage("buggy.convert", convert, inputs=("keras",), output="tflite"))


@hookimpl
def register_runners(register):
    register(BrokenRunner)
'''


@pytest.fixture
def plugins(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "buggy.py").write_text(PLUGIN)
    return folder


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_stage_that_raises_fails_its_step_with_the_exceptions_message(tiny_artifacts, plugins, tmp_path, zygote):
    env = {"SLIMLAB_PLUGINS_DIR": str(plugins), "SLIMLAB_ZYGOTE": zygote}
    step = json.dumps({"stage": "buggy.convert", "params": {}, "dataset": DIGITS})
    out = tmp_path / "out" / "artifact.json"
    done = slimlab("run-step", "--step", step, "--input", str(tiny_artifacts["keras"].sidecar), "--output", str(out),
                   env=env)
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr and 'buggy.py", line' in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"slimlab: error: TypeError: {BUG}"
    log = tmp_path / "step.log"
    log.write_text(done.stdout + done.stderr)
    marked = slimlab("mark-failed", "--step", step, "--input", str(tiny_artifacts["keras"].sidecar), "--output",
                     str(out), "--log", str(log), env=env)
    assert marked.returncode == 0, marked.stderr
    assert read_sidecar(out).error == f"TypeError: {BUG}"


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_runner_that_raises_leaves_a_failure_note_naming_the_exception(tiny_artifacts, plugins, tmp_path, zygote):
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(yaml.safe_dump({"devices": {"bench-box": {
        "transport": "local", "runner": "broken", "runtimes": ["tflite"], "workdir": str(tmp_path / "box")}}}))
    record = tmp_path / "bench" / "threads-1.json"
    done = slimlab("bench", "--inventory", str(inventory), "--device", "bench-box", "--artifact",
                   str(tiny_artifacts["fp32"].sidecar), "--threads", "1", "--settings", json.dumps(bench_block()),
                   "--output", str(record), env={"SLIMLAB_PLUGINS_DIR": str(plugins), "SLIMLAB_ZYGOTE": zygote})
    assert done.returncode != 0 and not record.exists()
    assert "Traceback (most recent call last)" in done.stderr and f"TypeError: {BUG}" in done.stderr
    note = BenchFailure.model_validate_json(failure_note_path(record).read_text())
    assert (note.tag, note.reason) == ("tool_error", f"TypeError: {BUG}")
