"""cluster.kmeans and the codebook/Huffman storage sizes it records."""

import math

import numpy as np
import pytest

from slimlab.artifacts import write
from slimlab import formats
from slimlab.kit.coding import codebook_storage, huffman_code_lengths
from slimlab.data import load_spec
from slimlab.errors import ConfigError
from slimlab.registry import stages
from slimlab.stages import run_step
from tests.support import DIGITS


def test_huffman_lengths_of_a_known_distribution():
    symbols = np.array([0] * 8 + [1] * 4 + [2] * 2 + [3] * 2)
    assert huffman_code_lengths(symbols) == {0: 1, 1: 2, 2: 3, 3: 3}
    assert huffman_code_lengths(np.zeros(5)) == {0.0: 1}


def test_codebook_storage_of_four_clusters():
    weights = np.array([0.5] * 50 + [-0.5] * 30 + [0.1] * 10 + [0.0] * 10, np.float32).reshape(10, 10)
    sizes = codebook_storage(weights)
    assert sizes["unique"] == 4 and sizes["index_bits"] == 2
    assert sizes["dense_bytes"] == 400
    assert sizes["codebook_index_bytes"] == 16 + math.ceil(100 * 2 / 8)
    # code lengths 1, 2, 3, 3 for 50, 30, 10, 10 weights
    assert sizes["huffman_bits_per_weight"] == pytest.approx((50 + 60 + 30 + 30) / 100)
    assert sizes["huffman_bytes"] == 16 + 4 + math.ceil(170 / 8)


@pytest.fixture(scope="module")
def clustered(tiny_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("clustered")
    return run_step({"stage": "cluster.kmeans", "params": {"clusters": 4, "epochs": 1}, "dataset": DIGITS},
                    tiny_artifacts["keras"].sidecar, root / "artifact.json")


def test_every_kernel_has_at_most_n_distinct_values(clustered):
    kernels = [layer.kernel.numpy() for layer in clustered.model.layers if hasattr(layer, "kernel")]
    assert kernels and all(len(np.unique(k)) <= 4 for k in kernels)
    recorded = clustered.info.metrics["clustering"]
    assert {name: s["unique"] for name, s in recorded["layers"].items()} == {
        layer.name: len(np.unique(layer.kernel.numpy())) for layer in clustered.model.layers if hasattr(layer, "kernel")
    }
    assert all(s["index_bits"] == 2 for s in recorded["layers"].values())
    assert recorded["huffman_bytes"] < recorded["dense_bytes"] / 8


def test_preserve_sparsity_keeps_zeros(tiny_artifacts, tmp_path):
    source = formats.get("keras").load(tiny_artifacts["keras"].dir)  # a copy: the shared fixture stays intact
    weights = source.get_weights()
    kernel = weights[-4].copy()  # the hidden dense layer's kernel
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.6)] = 0
    source.set_weights([*weights[:-4], kernel, *weights[-3:]])
    pruned = write(tmp_path / "pruned", "keras", source, lineage=[], dataset=DIGITS, splits=load_spec(DIGITS), metrics={})
    out = run_step({"stage": "cluster.kmeans", "params": {"clusters": 8, "epochs": 1}, "dataset": DIGITS},
                   pruned.sidecar, tmp_path / "clustered" / "artifact.json")
    clustered_kernel = out.model.get_weights()[-4]
    assert np.all(clustered_kernel[kernel == 0] == 0)
    assert out.info.zero_fraction >= pruned.info.zero_fraction - 1e-6


def test_chain_into_int8(clustered, tmp_path):
    int8 = run_step({"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": DIGITS},
                    clustered.sidecar, tmp_path / "artifact.json")
    assert [s.stage for s in int8.info.lineage] == ["train", "cluster.kmeans", "quantize.int8"]
    # int8 keeps what clustering left: 4 shared values per kernel quantise without loss.
    assert int8.info.accuracy["test"] == pytest.approx(clustered.info.accuracy["test"], abs=0.05)


@pytest.mark.parametrize("params, message", [
    ({"clusters": 1}, "clusters: Input should be greater than or equal to 2"),
    ({"clusters": 16, "epochs": -1}, "epochs: Input should be greater than or equal to 0"),
    ({"k": 4}, "k: Extra inputs are not permitted"),
])
def test_bad_params_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        stages()["cluster.kmeans"].validate(params, "recipes.r[1]")
