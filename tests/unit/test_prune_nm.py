"""prune.nm: every group of m consecutive inputs keeps at most n nonzeros, through fine-tuning and int8."""

import numpy as np
import pytest

from slimlab import registry
from slimlab.errors import ConfigError
from slimlab.kit.surgery import max_nonzeros_per_group
from slimlab.stages import run_step
from tests.support import DIGITS


def groups_along_inputs(kernel: np.ndarray, m: int) -> np.ndarray:
    """Nonzero counts of every group of m input channels, for each output and kernel tap (written out plainly)."""
    fan_in, outputs = kernel.shape[-2], kernel.shape[-1]
    taps = kernel.reshape(-1, fan_in, outputs)
    return np.array([
        np.count_nonzero(taps[t, start:start + m, out])
        for t in range(len(taps)) for out in range(outputs) for start in range(0, fan_in, m)
    ])


@pytest.mark.parametrize("params, named", [
    ({"n": 4, "m": 4}, "m"),
    ({"n": 5}, "m"),
    ({"n": 0}, "n"),
    ({"m": 1}, "m"),
    ({"epochs": 0}, "epochs"),
    ({"layer_types": ["Conv1D"]}, "layer_types"),
])
def test_bad_params_name_the_param(params, named):
    with pytest.raises(ConfigError, match=rf"'prune.nm': {named}"):
        registry.stages()["prune.nm"].validate(params, "recipes.r[1]")


def test_group_counter_groups_along_the_input_axis():
    kernel = np.zeros((8, 2), np.float32)
    kernel[0:3, 0] = 1  # three nonzeros in the first group of output 0
    kernel[4:6, 1] = 1
    assert max_nonzeros_per_group(kernel, 4) == 3
    kernel[2, 0] = 0
    assert max_nonzeros_per_group(kernel, 4) == 2
    conv = np.zeros((3, 3, 4, 2), np.float32)
    conv[1, 1, :, 0] = 1
    assert max_nonzeros_per_group(conv, 4) == 4


@pytest.mark.slow
def test_two_of_four_holds_after_fine_tuning_and_int8(tiny_artifacts, tmp_path):
    step = {"stage": "prune.nm", "params": {"epochs": 2}, "dataset": DIGITS}
    pruned = run_step(step, tiny_artifacts["keras"].sidecar, tmp_path / "nm" / "artifact.json")
    model = pruned.model
    for name in ("conv2", "fc1", "logits"):  # fan-in 8, 32, 32: all groups are full
        kernel = model.get_layer(name).kernel.numpy()
        assert groups_along_inputs(kernel, 4).max() <= 2, name
        assert 1 - np.count_nonzero(kernel) / kernel.size >= 0.5, name
    conv1 = model.get_layer("conv1").kernel.numpy()  # fan-in 1: a group of one stays dense
    assert np.count_nonzero(conv1) == np.count_nonzero(tiny_artifacts["keras"].model.get_layer("conv1").kernel.numpy())
    metrics = pruned.info.metrics
    assert metrics["pattern_holds"] is True
    assert max(metrics["max_nonzeros_per_group"].values()) == 2
    assert pruned.info.accuracy["test"] >= tiny_artifacts["keras"].info.accuracy["test"] - 0.1

    int8 = run_step({"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": DIGITS},
                    pruned.sidecar, tmp_path / "int8" / "artifact.json")
    assert int8.info.zero_fraction > tiny_artifacts["int8"].info.zero_fraction + 0.3
