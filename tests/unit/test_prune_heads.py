"""prune.heads: surgery equals masking, the paper's importance, the choice of heads, and the stage end to end."""

import csv

import numpy as np
import pytest

from slimlab.errors import ConfigError
from slimlab.kit import transformer
from slimlab.kit.training import keras
from slimlab.registry import models, stages
from tests.support import DIGITS

TINY = {"patch": 4, "depth": 2, "width": 16, "heads": 4}


def build(seed=0, **params):
    keras().utils.set_random_seed(seed)
    return models()["vit"].build((8, 8, 1), 10, **{**TINY, **params})


def inputs(n=16):
    return np.random.default_rng(1).normal(size=(n, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize("share", [False, True])
def test_a_head_pruned_model_computes_the_original_with_those_heads_masked(share, tmp_path):
    model = build(share=share)
    removed = {(0, 1), (0, 2)} if share else {(0, 1), (0, 2), (1, 0), (1, 1), (1, 3)}  # block 1 keeps one head
    x = inputs()
    original = model(x).numpy()
    with transformer.masked(model, removed):
        masked = model(x).numpy()
    pruned = transformer.remove_heads(model, removed)
    assert not np.allclose(masked, original, atol=1e-3)  # the heads did matter
    np.testing.assert_allclose(pruned(x).numpy(), masked, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), original)  # masking was undone
    # Physically smaller: the heads' Q/K/V are gone and O lost their rows.
    names = {layer.name for layer in pruned.layers}
    assert not {f"block{b}_head{h}_{p}" for b, h in removed for p in "qkv"} & names
    assert transformer.heads(pruned) == ({0: [0, 3]} if share else {0: [0, 3], 1: [2]})
    per_head = 3 * (16 * 4 + 4) + 4 * 16  # Q, K, V with biases, and O's rows
    assert pruned.count_params() == model.count_params() - len(removed) * per_head
    # It is an artifact like any other: it saves and loads back, a one-head block included.
    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras().models.load_model(tmp_path / "pruned.keras", compile=False)
    np.testing.assert_allclose(reloaded(x).numpy(), masked, rtol=1e-5, atol=1e-5)


def test_no_block_may_lose_every_head():
    with pytest.raises(ConfigError, match="block 1 would lose all 4 heads"):
        transformer.remove_heads(build(), {(1, h) for h in range(4)})


def test_gradient_importance_is_the_derivative_of_the_loss_by_a_head_gate():
    """Michel et al.'s I_h = E_x |∂L/∂ξ_h|, checked against a central difference per example."""
    import tensorflow as tf

    model, x, y = build(), inputs(4), np.arange(4)
    importance = transformer.gradient_importance(model, x, y, batch_size=2)
    o = model.get_layer("block1_o")
    kernel, rows = o.kernel.numpy(), transformer.head_rows(model, 1)[2]

    def losses(gate):
        scaled = kernel.copy()
        scaled[rows] *= gate
        o.kernel.assign(scaled)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x)).numpy().astype(np.float64)

    eps = 1e-2
    derivative = (losses(1 + eps) - losses(1 - eps)) / (2 * eps)
    o.kernel.assign(kernel)
    assert importance[(1, 2)] == pytest.approx(np.mean(np.abs(derivative)), rel=2e-2)
    assert set(importance) == {(b, h) for b in (0, 1) for h in range(4)}


def test_heads_are_chosen_globally_or_per_layer_keeping_min_heads():
    from slimlab.plugins.stages.prune_heads import choose

    present = {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}
    keys = {(0, h): (0.1 * h,) for h in range(4)} | {(1, h): (1 + h,) for h in range(4)}  # block 0 matters least

    def params(**p):
        return stages()["prune.heads"].validate(p, "test")

    assert choose(present, keys, params(fraction=0.5)) == {(0, 0), (0, 1), (0, 2), (1, 0)}  # block 0 keeps one head
    assert choose(present, keys, params(fraction=0.5, min_heads=2)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert choose(present, keys, params(fraction=0.5, scope="per_layer")) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert choose(present, keys, params(fraction=0.25)) == {(0, 0), (0, 1)}


@pytest.mark.slow
def test_the_stage_prunes_fine_tunes_and_ships_the_sixteen_heads_experiment(tmp_path):
    from slimlab.stages import run_step

    def step(stage, params, parent, name):
        return run_step({"stage": stage, "params": params, "dataset": DIGITS}, parent, tmp_path / name / "artifact.json")

    trained = step("train", {"model": "vit", "epochs": 3, "learning_rate": 3e-3, "model_params": TINY}, None, "train")
    pruned = step("prune.heads", {"fraction": 0.5, "scorer": "accuracy", "epochs": 1}, trained.sidecar, "heads")
    metrics = pruned.info.metrics
    assert metrics["heads_before"] == 8 and metrics["heads_after"] == 4
    assert sum(map(len, metrics["heads_left"].values())) == 4 and all(metrics["heads_left"].values())
    assert transformer.heads(pruned.model) == {int(b.removeprefix("block")): h for b, h in metrics["heads_left"].items()}
    assert metrics["params_after"] == pruned.info.params.count < metrics["params_before"] == trained.model.count_params()
    assert set(metrics["importance"]["block1"]["head3"]) == {"accuracy_drop", "gradient"}
    assert metrics["test_accuracy_before"] == pytest.approx(trained.info.accuracy["test"])

    rows = list(csv.DictReader((pruned.dir / metrics["report"]).open()))
    assert len(rows) == 8 and sum(row["removed"] == "True" for row in rows) == 4
    for block in ("0", "1"):
        alone = max(float(row["test_accuracy_alone_in_layer"]) for row in rows if row["block"] == block)
        assert metrics["best_head_only"][f"block{block}"]["test_accuracy"] == pytest.approx(alone)

    with pytest.raises(ConfigError, match="prune.heads: the input model is not a transformer"):
        step("prune.heads", {}, step("train", {"epochs": 1, "model_params": {"width": 4, "dense": 8}}, None, "cnn").sidecar,
             "cnn-heads")
