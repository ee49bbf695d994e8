"""The plugin example in README.md must work as printed."""

import json
import re

import numpy as np

from tests.support import REPO, slimlab


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
    step = '{"stage": "prune.threshold", "params": {"threshold": 0.05}, "dataset": {"name": "digits", "seed": 7, "val_fraction": 0.1, "test_fraction": 0.2}}'
    out = tmp_path / "out" / "artifact.json"
    done = slimlab("run-step", "--step", step, "--input", str(tiny_artifacts["keras"].sidecar), "--output", str(out),
                   env={"SLIMLAB_PLUGINS_DIR": str(plugins)})
    assert done.returncode == 0, done.stderr
    meta = json.loads(out.read_text())
    assert meta["lineage"][-1] == {"stage": "prune.threshold", "params": {"threshold": 0.05}}
    before = tiny_artifacts["keras"].meta["sparsity"]
    assert meta["sparsity"] > before + 0.1
    weights = [np.abs(w) for w in tiny_artifacts["keras"].model.get_weights()]
    expected = sum(int((w < 0.05).sum()) for w in weights) / sum(w.size for w in weights)
    assert abs(meta["sparsity"] - expected) < 1e-6
