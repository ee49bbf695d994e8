"""Code fingerprints: what counts as a plugin's code."""

import sys
import types

from slimlab import identity, registry
from slimlab.plugins.stages import prune_magnitude, train


def test_a_stage_fingerprint_covers_its_module_and_the_kit_it_uses():
    modules = set(identity.closure(identity.module_name_of(prune_magnitude.prune_magnitude)))
    assert "slimlab.plugins.stages.prune_magnitude" in modules
    assert "slimlab.kit.surgery" in modules and "slimlab.kit.training" in modules
    assert not any(name.startswith("slimlab.") and ".kit" not in name and ".plugins." not in name for name in modules)


def test_kit_code_imported_inside_a_function_counts_too():
    # import_model imports slimlab.kit.keras3 at the top, and the stages' kit users import inside functions.
    from slimlab.plugins.stages import distill

    assert "slimlab.kit.distillation" in identity.closure(identity.module_name_of(distill.distill))


def test_train_fingerprint_changes_with_the_architecture():
    stage = registry.stages()["train"]
    cnn = stage.params(model="cnn")
    assert identity.fingerprint(stage.run, *stage.uses(cnn)) != identity.fingerprint(train.train)


def test_a_distribution_upgrade_changes_the_fingerprint(monkeypatch):
    module = types.ModuleType("thirdparty_stage")
    module.__file__ = __file__
    exec("def run(artifact, params, ctx):\n    return artifact.model\n", module.__dict__)
    module.run.__module__ = module.__name__
    monkeypatch.setitem(sys.modules, module.__name__, module)
    versions = {}
    for version in ("1.0", "1.1"):
        dist = types.SimpleNamespace(version=version, metadata={"Name": "thirdparty"})
        monkeypatch.setattr(registry, "distribution_of", lambda name, d=dist: d)
        versions[version] = identity.fingerprint(module.run)
    assert versions["1.0"] != versions["1.1"]
