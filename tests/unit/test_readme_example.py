"""The plugin example in README.md must work as printed."""

import json
import re

import numpy as np

from slimlab.artifacts import read_sidecar
from tests.support import DIGITS, REPO, slimlab


def readme_plugin() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (plugin,) = [b for b in blocks if "register_stages" in b]
    return plugin


def test_readme_plugin_is_short_and_runs(tiny_artifacts, tmp_path):
    plugin = readme_plugin()
    assert len(plugin.strip().splitlines()) <= 25
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "prune_threshold.py").write_text(plugin)
    step = json.dumps({"stage": "prune.threshold", "params": {"threshold": 0.05}, "dataset": DIGITS})
    out = tmp_path / "out" / "artifact.json"
    done = slimlab("run-step", "--step", step, "--input", str(tiny_artifacts["keras"].sidecar), "--output", str(out),
                   env={"SLIMLAB_PLUGINS_DIR": str(plugins)})
    assert done.returncode == 0, done.stderr
    info = read_sidecar(out)
    assert (info.lineage[-1].stage, info.lineage[-1].params) == ("prune.threshold", {"threshold": 0.05})
    before = tiny_artifacts["keras"].info.zero_fraction
    assert info.zero_fraction > before + 0.1
    weights = [np.abs(w) for w in tiny_artifacts["keras"].model.get_weights()]
    expected = sum(int((w < 0.05).sum()) for w in weights) / sum(w.size for w in weights)
    assert abs(info.zero_fraction - expected) < 1e-6
