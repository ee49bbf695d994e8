"""prune.structured: params, clear errors and the stage on the tiny digits model (the surgery: test_depgraph)."""

import pytest

from slimlab import registry
from slimlab.errors import ConfigError
from slimlab.stages import run_step
from tests.support import DIGITS


@pytest.mark.parametrize("params, named", [
    ({"fraction": 1.0}, "fraction"),
    ({"fraction": -0.1}, "fraction"),
    ({"per_layer": {"conv1": 1.5}}, "per_layer"),
    ({"layers": ["conv1"], "per_layer": {"fc1": 0.3}}, "per_layer"),
    ({"min_channels": 0}, "min_channels"),
    ({"epochs": -1}, "epochs"),
    ({"target": "flops"}, "target"),
    ({"score": "random"}, "score"),
    ({"scope": "local"}, "scope"),
    ({"per_layer": {"conv1": 0.3}, "target": "macs"}, "per_layer needs target: channels and scope: uniform"),
    ({"per_layer": {"conv1": 0.3}, "scope": "global"}, "per_layer needs target: channels and scope: uniform"),
])
def test_bad_params_name_the_param(params, named):
    with pytest.raises(ConfigError, match=rf"'prune.structured': {named}"):
        registry.stages()["prune.structured"].validate(params, "recipes.r[1]")


def structured(tmp_path, source, params, name="structured"):
    return run_step({"stage": "prune.structured", "params": params, "dataset": DIGITS}, source.sidecar, tmp_path / name / "artifact.json")


def test_logits_or_unknown_overrides_are_clear_errors(tiny_artifacts, tmp_path):
    with pytest.raises(ConfigError, match=r"layers: 'logits' produces the model's outputs"):
        structured(tmp_path, tiny_artifacts["keras"], {"layers": ["conv1", "logits"]})
    with pytest.raises(ConfigError, match=r"per_layer: 'logits' produces the model's outputs"):
        structured(tmp_path, tiny_artifacts["keras"], {"per_layer": {"logits": 0.5}})
    with pytest.raises(ConfigError, match=r"layers: the model has no prunable layer 'pool1'; .*: conv1, conv2, fc1"):
        structured(tmp_path, tiny_artifacts["keras"], {"layers": ["pool1"]})


@pytest.mark.slow
def test_halves_the_cnn_and_chains_to_int8(tiny_artifacts, tmp_path):
    source = tiny_artifacts["keras"]  # cnn width 8, dense 32 on 8x8 digits
    pruned = structured(tmp_path, source, {"fraction": 0.5, "min_channels": 2, "per_layer": {"fc1": 0.25}, "epochs": 4})
    model = pruned.model
    assert model.get_layer("conv1").kernel.shape == (3, 3, 1, 4)
    assert model.get_layer("conv2").kernel.shape == (3, 3, 4, 8)
    assert model.get_layer("fc1").kernel.shape == (2 * 2 * 8, 24)
    assert model.get_layer("logits").kernel.shape == (24, 10)
    expected = (9 * 4 + 4) + (9 * 4 * 8 + 8) + (32 * 24 + 24) + (24 * 10 + 10)
    metrics = pruned.info.metrics
    assert pruned.info.params.count == metrics["params_after"] == expected
    assert metrics["params_before"] == source.info.params.count
    assert metrics["channels"] == {"conv1": {"before": 8, "kept": 4}, "conv2": {"before": 16, "kept": 8},
                                   "fc1": {"before": 32, "kept": 24}}
    assert metrics["macs_before"] == source.info.macs["total"] and metrics["macs_after"] == pruned.info.macs["total"]
    assert pruned.info.accuracy["test"] >= source.info.accuracy["test"] - 0.1

    int8 = run_step({"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": DIGITS},
                    pruned.sidecar, tmp_path / "int8" / "artifact.json")
    assert int8.info.params.count == expected
    assert int8.info.accuracy["test"] >= pruned.info.accuracy["test"] - 0.05


@pytest.mark.slow
def test_macs_target_with_taylor_scores_globally(tiny_artifacts, tmp_path):
    source = tiny_artifacts["keras"]
    params = {"fraction": 0.4, "target": "macs", "score": "taylor", "scope": "global", "taylor_batches": 2,
              "min_channels": 2, "epochs": 1}
    pruned = structured(tmp_path, source, params)
    removed = 1 - pruned.info.macs["total"] / source.info.macs["total"]
    assert 0.4 <= removed < 0.45
    assert pruned.info.metrics["macs_after"] == pruned.info.macs["total"]


def test_bn_score_leaves_groups_without_batchnorm_alone(tiny_artifacts, tmp_path):
    pruned = structured(tmp_path, tiny_artifacts["keras"], {"score": "bn", "epochs": 0})
    assert pruned.info.metrics["unscored"] == [["conv1"], ["conv2"], ["fc1"]]
    assert pruned.info.params.count == tiny_artifacts["keras"].info.params.count
