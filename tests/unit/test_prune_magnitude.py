"""prune.magnitude: real zeros at the target sparsity, layer selection, param checks, and int8 after it."""

import numpy as np
import pytest

from slimlab import formats, registry
from slimlab.errors import ConfigError
from slimlab.stages import run_step
from tests.support import DIGITS


def prune(tmp_path, source, params, name="prune"):
    return run_step({"stage": "prune.magnitude", "params": params, "dataset": DIGITS}, source.sidecar, tmp_path / name / "artifact.json")


def zero_fraction(array) -> float:
    return 1.0 - np.count_nonzero(array) / array.size


@pytest.mark.parametrize("params, named", [
    ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": 0}, "sparsity"),
    ({"schedule": "linear"}, "schedule"),
    ({"sparsity": 0.5, "initial_sparsity": 0.6}, "initial_sparsity"),
    ({"schedule": "constant", "initial_sparsity": 0.1}, "initial_sparsity"),
    ({"layers": ["fc1"], "layer_types": ["Dense"]}, "layer_types"),
    ({"layer_types": ["LSTM"]}, "layer_types"),
    ({"epochs": 0}, "epochs"),
    ({"sparsty": 0.8}, "sparsty"),
])
def test_bad_params_name_the_param(params, named):
    stage = registry.stages()["prune.magnitude"]
    with pytest.raises(ConfigError, match=rf"invalid params for stage 'prune.magnitude': {named}"):
        stage.validate(params, "recipes.r[1]")


@pytest.mark.slow
def test_reaches_target_sparsity_and_int8_keeps_the_zeros(tiny_artifacts, tmp_path):
    pruned = prune(tmp_path, tiny_artifacts["keras"], {"sparsity": 0.7, "epochs": 3, "learning_rate": 1e-3})
    model = pruned.model
    kernels = {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}
    assert set(kernels) == {"conv1", "conv2", "fc1", "logits"}
    for name, kernel in kernels.items():
        assert zero_fraction(kernel) >= 0.7 - 0.01, name
        assert pruned.info.metrics["kernel_sparsity"][name] == pytest.approx(zero_fraction(kernel), abs=1e-4)
    assert pruned.info.zero_fraction >= 0.68  # host-measured over all weights, biases included
    # This model is tiny (conv1 keeps 22 of 72 weights), so fine-tuning recovers only part of the accuracy.
    assert pruned.info.accuracy["test"] >= 0.6

    int8 = run_step({"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": DIGITS},
                    pruned.sidecar, tmp_path / "int8" / "artifact.json")
    weights = formats.get("tflite").weights(int8.model)
    assert sum(w.size - np.count_nonzero(w) for w in weights) / sum(w.size for w in weights) >= 0.65
    assert int8.info.size.gzip_bytes < tiny_artifacts["int8"].info.size.gzip_bytes


@pytest.mark.slow
def test_selects_layers_by_type_with_a_constant_schedule(tiny_artifacts, tmp_path):
    before = tiny_artifacts["keras"].model
    pruned = prune(tmp_path, tiny_artifacts["keras"], {"sparsity": 0.6, "schedule": "constant", "layer_types": ["Dense"], "epochs": 1})
    after = pruned.model
    assert set(pruned.info.metrics["kernel_sparsity"]) == {"fc1", "logits"}
    for name in ("fc1", "logits"):
        assert zero_fraction(after.get_layer(name).kernel.numpy()) >= 0.6 - 0.01
    for name in ("conv1", "conv2"):
        assert zero_fraction(after.get_layer(name).kernel.numpy()) == zero_fraction(before.get_layer(name).kernel.numpy())


def test_unknown_or_unprunable_layer_names_are_clear_errors(tiny_artifacts, tmp_path):
    with pytest.raises(ConfigError, match=r"prune.magnitude: layers: the model has no layer 'fc9'"):
        prune(tmp_path, tiny_artifacts["keras"], {"layers": ["fc9"]})
    with pytest.raises(ConfigError, match=r"layers: 'pool1' is a MaxPooling2D"):
        prune(tmp_path, tiny_artifacts["keras"], {"layers": ["pool1"]})
