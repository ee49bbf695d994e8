"""The plugin host: built-ins, entry-point plugins, plugin files, and broken plugins."""

import json
import textwrap

from tests.support import STAGE_PLUGIN, slimlab

BUILTINS = {
    "slimlab.plugins.stages.train": ["register_stages"],
    "slimlab.plugins.stages.quantize_int8": ["register_stages"],
    "slimlab.plugins.formats.tflite": ["register_formats"],  # its convert.tflite stage comes with the format
    "slimlab.plugins.data.mnist": ["register_datasets"],
    "slimlab.plugins.models.cnn": ["register_models"],
    "slimlab.plugins.lab.local_transport": ["register_transports"],
    "slimlab.plugins.lab.python_runner": ["register_runners"],
}


def plugins_json(**kwargs) -> list[dict]:
    done = slimlab("plugins", **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_builtins_are_listed_with_version_and_hooks():
    listed = {row["name"]: row for row in plugins_json()}
    for name, hooks in BUILTINS.items():
        assert listed[name]["hooks"] == hooks
        assert listed[name]["version"] == "0.1.0"


def test_entry_point_plugin_from_an_installed_distribution(tmp_path):
    # A real distribution on sys.path: a module plus .dist-info with an entry point.
    (tmp_path / "slimlab_extra.py").write_text(STAGE_PLUGIN.format(name="extra.identity"))
    info = tmp_path / "slimlab_extra-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slimlab-extra\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[slimlab]\nextra = slimlab_extra\n")
    env = {"PYTHONPATH": str(tmp_path)}

    listed = {row["name"]: row for row in plugins_json(env=env)}
    assert listed["extra"] == {"name": "extra", "version": "1.2.3", "hooks": ["register_stages"]}
    stages = json.loads(slimlab("stages", env=env).stdout)
    assert stages["extra.identity"]["doc"] == "Return the input model unchanged."


def test_plugin_files_in_the_plugins_folder_and_its_subfolders_are_loaded(tmp_path):
    (tmp_path / "my_stage.py").write_text(STAGE_PLUGIN.format(name="mine.identity"))
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "nested.py").write_text(STAGE_PLUGIN.format(name="mine.nested"))
    env = {"SLIMLAB_PLUGINS_DIR": str(tmp_path)}
    names = [row["name"] for row in plugins_json(env=env)]
    assert str(tmp_path / "my_stage.py") in names and str(tmp_path / "stages" / "nested.py") in names
    assert {"mine.identity", "mine.nested"} <= set(json.loads(slimlab("stages", env=env).stdout))


def test_broken_hook_signature_names_the_plugin(tmp_path):
    (tmp_path / "broken.py").write_text(textwrap.dedent('''
        from slimlab import hookimpl

        @hookimpl
        def register_stages(register, extra_argument):
            pass
    '''))
    done = slimlab("plugins", env={"SLIMLAB_PLUGINS_DIR": str(tmp_path)})
    assert done.returncode == 0  # skipped with a warning, not fatal
    assert "broken.py" in done.stderr and "extra_argument" in done.stderr
    assert "Traceback" not in done.stderr


def test_misspelt_hook_fails_at_check_pending(tmp_path):
    (tmp_path / "typo.py").write_text(textwrap.dedent('''
        from slimlab import hookimpl

        @hookimpl
        def register_stagez(register):
            pass
    '''))
    done = slimlab("plugins", env={"SLIMLAB_PLUGINS_DIR": str(tmp_path)})
    assert done.returncode == 0  # skipped with a warning, not fatal
    assert "typo.py" in done.stderr and "register_stagez" in done.stderr


def test_plugin_that_fails_to_import_is_named(tmp_path):
    (tmp_path / "crashes.py").write_text("raise RuntimeError('boom')\n")
    done = slimlab("plugins", env={"SLIMLAB_PLUGINS_DIR": str(tmp_path)})
    assert done.returncode == 0  # skipped with a warning, not fatal
    assert "crashes.py" in done.stderr and "boom" in done.stderr


def test_duplicate_stage_name_names_both_plugins(tmp_path):
    (tmp_path / "clash.py").write_text(STAGE_PLUGIN.format(name="quantize.int8"))
    done = slimlab("stages", env={"SLIMLAB_PLUGINS_DIR": str(tmp_path)})
    assert done.returncode == 0  # the built-in keeps the name; the plugin is skipped with a warning
    assert "quantize.int8" in done.stderr
    assert "clash.py" in done.stderr and "slimlab.plugins.stages.quantize_int8" in done.stderr
