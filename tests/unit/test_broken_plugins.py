"""A broken plugin is skipped with one warning line; everything else loads, and only a config that names
something it may provide fails. Each test runs the CLI in a fresh interpreter: the registry is cached per
process."""

import json
from pathlib import Path

import yaml

from tests.support import STAGE_PLUGIN, slimlab

OLD_REGISTER = '''
import numpy as np

from slimlab.api import hookimpl


def load_digits16(params):
    return np.zeros((40, 4, 4, 1), np.float32), np.arange(40) % 2


@hookimpl
def register_datasets(register):
    register("digits16", load_digits16)  # the old two-argument form
'''

HALF_PLUGIN = '''
import numpy as np

from slimlab.api import Dataset, Stage, hookimpl


def load(params):
    return np.zeros((40, 4, 4, 1), np.float32), np.arange(40) % 2


def identity(artifact, params, ctx):
    return artifact.model


@hookimpl
def register_datasets(register):
    register(Dataset("half.data", load))


@hookimpl
def register_stages(register):
    register(Stage("half.identity", identity))
    raise RuntimeError("the second hook broke")
'''


def install(site: Path, dist: str, version: str, entry: str, module: str, source: str) -> None:
    """A distribution on ``site`` as pip leaves it: one module, and a dist-info with a ``slimlab`` entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[slimlab]\n{entry} = {module}\n")


def experiment(root: Path, dataset: str = "digits") -> Path:
    """A small experiment folder that uses only built-ins (and the data set ``dataset``)."""
    work = root / "work"
    work.mkdir(exist_ok=True)
    (work / "devices.yaml").write_text(yaml.safe_dump({"devices": {"here": {
        "transport": "local", "runner": "python", "runtimes": ["tflite"], "workdir": str(root / "here")}}}))
    (work / "config.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": dataset}, "model": "cnn", "recipes": {"int8": ["train", "quantize.int8"]},
        "formats": ["tflite"], "lab": {"inventory": "devices.yaml", "devices": ["here"]},
        "bench": {"threads": [1], "warmup": 1, "runs": 5}}))
    return work


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("slimlab: warning:")]


def test_a_distribution_that_fails_to_import_is_skipped_and_a_config_without_it_passes(tmp_path):
    site = tmp_path / "site"
    install(site, "slimlab-needs", "0.2.0", "needs", "slimlab_needs", "import slimlab_missing_dependency\n")
    env = {"PYTHONPATH": str(site)}
    reason = "failed to import slimlab_needs: ModuleNotFoundError: No module named 'slimlab_missing_dependency'"

    done = slimlab("plugins", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"slimlab: warning: plugin 'needs' (slimlab-needs 0.2.0) skipped: {reason}"]
    listed = {row["name"]: row for row in json.loads(done.stdout)}
    assert listed["needs"] == {"name": "needs", "version": "0.2.0", "skipped": reason}
    assert "register_stages" in listed["slimlab.plugins.stages.train"]["hooks"]

    checked = slimlab("validate", "config.yaml", cwd=experiment(tmp_path), env=env)
    assert checked.returncode == 0, checked.stderr
    assert len(warnings(checked.stderr)) == 1


def test_the_old_two_argument_register_says_it_takes_one_object_and_only_a_config_using_it_fails(tmp_path):
    site = tmp_path / "site"
    install(site, "slimlab-toy", "0.3.0", "toy", "slimlab_toy16", OLD_REGISTER)
    env = {"PYTHONPATH": str(site)}

    done = slimlab("datasets", env=env)
    assert done.returncode == 0, done.stderr
    assert "digits" in json.loads(done.stdout) and "digits16" not in json.loads(done.stdout)
    [warning] = warnings(done.stderr)
    assert warning.startswith("slimlab: warning: plugin 'toy' (slimlab-toy 0.3.0) skipped: register_datasets "
                              "failed: register() takes one object that carries its own .name, e.g. register(")
    assert warning.endswith("; got register('digits16', load_digits16)")

    assert slimlab("validate", "config.yaml", cwd=experiment(tmp_path), env=env).returncode == 0
    refused = slimlab("validate", "config.yaml", cwd=experiment(tmp_path, "digits16"), env=env)
    assert refused.returncode == 2
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("slimlab: error:")]
    assert error.startswith("slimlab: error: dataset.name: unknown data set 'digits16'; registered: ")
    assert "; plugin 'toy' (slimlab-toy 0.3.0) was skipped as broken (register_datasets failed: register() " \
           "takes one object" in error
    assert error.endswith("), it may provide it") and "Traceback" not in refused.stderr


def test_a_plugin_file_with_a_syntax_error_in_the_working_folder_is_skipped(tmp_path):
    work = experiment(tmp_path)
    (work / "plugins").mkdir()
    (work / "plugins" / "broken.py").write_text("def register_stages(register:\n")
    (work / "plugins" / "mine.py").write_text(STAGE_PLUGIN.format(name="mine.identity"))

    done = slimlab("stages", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "mine.identity" in json.loads(done.stdout)
    [warning] = warnings(done.stderr)
    assert warning.startswith("slimlab: warning: plugin 'plugins/broken.py' skipped: failed to import: SyntaxError: ")
    checked = slimlab("validate", "config.yaml", cwd=work)
    assert checked.returncode == 0, checked.stderr


def test_a_plugin_whose_second_hook_raises_registers_nothing_in_any_hook(tmp_path):
    (tmp_path / "half.py").write_text(HALF_PLUGIN)
    env = {"SLIMLAB_PLUGINS_DIR": str(tmp_path)}
    reason = "register_stages failed: RuntimeError: the second hook broke"

    # The data sets first: the hook that ran cleanly is dropped all the same.
    datasets = slimlab("datasets", env=env)
    assert datasets.returncode == 0, datasets.stderr
    assert "half.data" not in json.loads(datasets.stdout)
    assert warnings(datasets.stderr) == [f"slimlab: warning: plugin '{tmp_path / 'half.py'}' skipped: {reason}"]
    stages = slimlab("stages", env=env)
    assert "half.identity" not in json.loads(stages.stdout) and len(warnings(stages.stderr)) == 1
    listed = {row["name"]: row for row in json.loads(slimlab("plugins", env=env).stdout)}
    assert listed[str(tmp_path / "half.py")] == {"name": str(tmp_path / "half.py"), "version": None, "skipped": reason}


def test_of_two_plugins_with_one_name_the_later_loaded_is_skipped_and_both_are_named(tmp_path):
    (tmp_path / "a.py").write_text(STAGE_PLUGIN.format(name="same.identity"))
    # b.py also brings a stage of its own name: skipped, it brings nothing.
    (tmp_path / "b.py").write_text(STAGE_PLUGIN.format(name="same.identity").replace(
        "    register(", '    register(Stage("b.only", identity))\n    register('))
    done = slimlab("stages", env={"SLIMLAB_PLUGINS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    stages = json.loads(done.stdout)
    assert "same.identity" in stages and "b.only" not in stages
    assert warnings(done.stderr) == [f"slimlab: warning: plugin '{tmp_path / 'b.py'}' skipped: stage 'same.identity' "
                                     f"is already registered by plugin '{tmp_path / 'a.py'}'"]
