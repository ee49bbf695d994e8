"""vit: the layer names prune.heads and distill rely on, ALBERT's sharing and factorization, TFLite parity."""

import numpy as np
import pytest

from slimlab.errors import ConfigError
from slimlab.kit import transformer
from slimlab.registry import models
from tests.support import DIGITS

TINY = {"patch": 4, "depth": 2, "width": 16, "heads": 4}


def build(**params):
    return models()["vit"].build((8, 8, 1), 10, **{**TINY, **params})


def weighted(model) -> list[str]:
    return sorted(layer.name for layer in model.layers if layer.weights)


def test_heads_and_blocks_are_found_by_name():
    model = build(depth=3)
    assert transformer.depth(model) == 3
    assert transformer.heads(model) == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
    assert transformer.attention_layers(model, 2) == [f"block2_head{j}_attention" for j in range(4)]
    assert model.get_layer("block1_head3_attention").output.shape == (None, 4, 4)  # 8x8 image, 4x4 patches: 4 tokens
    assert model.get_layer("block1_head3_q").units == 4 and model.get_layer("block1_o").kernel.shape == (16, 16)
    assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)


def test_a_shared_model_holds_one_set_of_block_weights():
    shared, one_block = build(depth=4, share=True), build(depth=1)
    # Weight count: four blocks cost what one costs.
    assert shared.count_params() == one_block.count_params()
    assert weighted(shared) == weighted(one_block)
    # Identity: every block calls block 0's layers, and the model holds each variable once.
    assert len({id(v) for v in shared.weights}) == len(shared.weights) == len(one_block.weights)
    assert len(shared.get_layer("block0_head2_q").inbound_nodes) == 4
    assert len(shared.get_layer("block0_mlp2").inbound_nodes) == 4
    assert transformer.depth(shared) == 4 and transformer.heads(shared) == {0: [0, 1, 2, 3]}
    assert [transformer.weighted_block(shared, i) for i in range(4)] == [0, 0, 0, 0]
    assert transformer.attention_layers(shared, 3) == [f"block3_head{j}_attention" for j in range(4)]
    # ...and the blocks really run in sequence: block 3's attention differs from block 0's.
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    taps = transformer_outputs(shared, ["block0_head0_attention", "block3_head0_attention"], x)
    assert not np.allclose(taps[0], taps[1])


def transformer_outputs(model, names, x):
    from slimlab.kit.training import keras

    return keras().Model(model.inputs, [model.get_layer(name).output for name in names])(x)


def test_attention_macs_count_both_products_of_every_head():
    # 2 blocks x 4 heads x (QK^T + A.V), each 4 tokens x 4 tokens x head size 4
    assert transformer.attention_macs(build()) == 2 * 4 * 2 * 4 * 4 * 4
    assert transformer.attention_macs(build(depth=3, share=True)) == 3 * 4 * 2 * 4 * 4 * 4
    assert transformer.attention_macs(transformer.remove_heads(build(), {(0, 1)})) == 7 * 2 * 4 * 4 * 4


def test_factorized_embedding_goes_patch_then_k_then_width():
    plain, factorized = build(width=64), build(width=64, embed_dim=4)
    assert plain.get_layer("patch_embed").kernel.shape == (4, 4, 1, 64)
    assert factorized.get_layer("patch_embed").kernel.shape == (4, 4, 1, 4)
    assert factorized.get_layer("patch_factor").kernel.shape == (4, 64)
    embedding_params = {name: sum(m.get_layer(n).count_params() for n in ("patch_embed", "patch_factor") if n in weighted(m))
                        for name, m in (("plain", plain), ("factorized", factorized))}
    assert embedding_params == {"plain": 16 * 64 + 64, "factorized": 16 * 4 + 4 + 4 * 64 + 64}


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ConfigError, match="patch 3 does not tile 8×8 images"):
        build(patch=3)
    with pytest.raises(ConfigError, match="width 16 does not split into 3 heads"):
        build(heads=3)
    with pytest.raises(ConfigError, match="not a transformer"):
        transformer.require(models()["cnn"].build((8, 8, 1), 10), "input model", "prune.heads")


@pytest.mark.slow
def test_the_vit_converts_to_tflite_with_parity(tmp_path):
    from slimlab.stages import run_step

    def step(stage, params, parent, name):
        return run_step({"stage": stage, "params": params, "dataset": DIGITS}, parent, tmp_path / name / "artifact.json")

    trained = step("train", {"model": "vit", "epochs": 2, "model_params": {**TINY, "augment": 0.1, "dropout": 0.1}},
                   None, "train")
    converted = step("convert.tflite", {}, trained.sidecar, "tflite")
    parity = converted.info.metrics["parity"]
    assert parity["passed"] and parity["agreement"] >= 0.995 and parity["max_abs_diff_rel"] <= 1e-3, parity
    assert converted.info.accuracy["test"] == pytest.approx(trained.info.accuracy["test"], abs=0.01)
