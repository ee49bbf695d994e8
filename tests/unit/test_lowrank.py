"""lowrank.svd: truncated-SVD factorisation of Dense / 1x1 conv kernels, on the tiny digits model."""

import numpy as np
import pytest

from slimlab import registry
from slimlab.artifacts import read_sidecar
from slimlab.errors import ConfigError
from slimlab.report.tables import unchanged_steps
from slimlab.stages import run_step
from tests.support import DIGITS

# The tiny model's fc1 is 64 → 32: full rank 32; factorising saves params only for K < 64·32/96 ≈ 21.3.
M, N = 64, 32


def lowrank(tiny_artifacts, tmp_path, name="lowrank", parent="keras", **params):
    step = {"stage": "lowrank.svd", "params": params, "dataset": DIGITS}
    return run_step(step, tiny_artifacts[parent].sidecar, tmp_path / name / "artifact.json")


def validate(**params):
    return registry.stages()["lowrank.svd"].validate(params, "step")


def images(count=64):
    return np.random.default_rng(0).random((count, 8, 8, 1), dtype=np.float32)


def test_full_rank_reproduces_the_model_and_error_shrinks_as_k_grows(tiny_artifacts):
    from slimlab.plugins.stages.lowrank_svd import factorise

    model = tiny_artifacts["keras"].model
    x = images()
    expected = model.predict(x, verbose=0)
    full = factorise(model, {"fc1": N})
    assert [layer.name for layer in full.layers if layer.name.startswith("fc1")] == ["fc1_u", "fc1_v"]
    np.testing.assert_allclose(full.predict(x, verbose=0), expected, atol=1e-4)

    # The two factors' product approximates the kernel better as K grows, and as well as
    # any rank-K matrix can (Eckart–Young: the error is the norm of the dropped singular values).
    kernel = model.get_layer("fc1").get_weights()[0]
    singular = np.linalg.svd(kernel, compute_uv=False)
    errors = []
    for k in (1, 4, 8, 16, 24):
        pair = factorise(model, {"fc1": k})
        product = pair.get_layer("fc1_u").get_weights()[0] @ pair.get_layer("fc1_v").get_weights()[0]
        errors.append(np.linalg.norm(kernel - product))
        assert errors[-1] == pytest.approx(np.sqrt(np.sum(singular[k:] ** 2)), rel=1e-3)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_stage_splits_the_dense_head_and_counts_params(tiny_artifacts, tmp_path):
    out = lowrank(tiny_artifacts, tmp_path, rank=4, epochs=0)
    model = out.model
    assert model.get_layer("fc1_u").kernel.shape == (M, 4)
    assert model.get_layer("fc1_u").bias is None
    assert model.get_layer("fc1_v").kernel.shape == (4, N)
    assert model.get_layer("fc1_v").activation.__name__ == "relu"
    assert "logits" in [layer.name for layer in model.layers]  # the default leaves the logits alone

    record = out.info.metrics["lowrank"]
    assert record == {"fc1": {
        "M": M, "N": N, "K": 4, "retained_energy": record["fc1"]["retained_energy"],
        "params_before": M * N + N, "params_after": 4 * (M + N) + N,
    }}
    saved = M * N - 4 * (M + N)
    assert out.info.params.count == tiny_artifacts["keras"].info.params.count - saved


def test_energy_picks_the_smallest_rank_that_keeps_it(tiny_artifacts, tmp_path):
    record = lowrank(tiny_artifacts, tmp_path, energy=0.8, epochs=0).info.metrics["lowrank"]["fc1"]
    singular = np.linalg.svd(tiny_artifacts["keras"].model.get_layer("fc1").get_weights()[0], compute_uv=False)
    kept = np.cumsum(singular**2) / np.sum(singular**2)
    k = record["K"]
    assert record["retained_energy"] >= 0.8
    assert kept[k - 1] >= 0.8 > kept[k - 2]


def test_a_layer_that_would_not_shrink_is_skipped_with_the_reason(tiny_artifacts, tmp_path):
    out = lowrank(tiny_artifacts, tmp_path, rank=22, layers=["fc1", "logits"], epochs=0)
    record = out.info.metrics["lowrank"]
    assert "MN/(M+N)=21.3" in record["fc1"]["skipped"]
    assert "skipped" in record["logits"]  # 32 → 10 at K = 10
    assert out.info.params.count == tiny_artifacts["keras"].info.params.count
    # The step says it changed nothing, and why: the report notes it on every model made from it.
    assert out.info.metrics["unchanged"] == "no layer where rank < MN/(M+N) at this energy or rank"
    assert unchanged_steps(out.info, read_sidecar) == f"lowrank.svd changed nothing: {out.info.metrics['unchanged']}"


def test_a_step_that_factorised_something_says_nothing_of_the_kind(tiny_artifacts, tmp_path):
    assert "unchanged" not in lowrank(tiny_artifacts, tmp_path, rank=4, epochs=0).info.metrics


def test_params_are_validated():
    assert validate(rank=8).energy is None
    with pytest.raises(ConfigError, match="rank and energy are alternatives"):
        validate(rank=8, energy=0.9)
    for energy in (0, 1.5):
        with pytest.raises(ConfigError, match="energy: Input should be"):
            validate(energy=energy)
    with pytest.raises(ConfigError, match="set rank or energy"):
        validate(energy=None)
    with pytest.raises(ConfigError, match="rank: Input should be greater than or equal to 1"):
        validate(rank=0)


def test_unknown_layer_is_named(tiny_artifacts, tmp_path):
    with pytest.raises(ConfigError, match="layers: conv1, nope not Dense or 1x1 Conv2D layers"):
        lowrank(tiny_artifacts, tmp_path, rank=4, layers=["conv1", "nope"])


def test_any_graph_residual_branch_and_squeeze_excite_at_full_rank():
    import tf_keras as keras

    from slimlab.kit.depgraph import logits_layers
    from slimlab.plugins.stages.lowrank_svd import factorise

    layers = keras.layers
    inputs = keras.Input((4, 4, 24))
    x = layers.Conv2D(20, 1, activation="relu", name="mix")(inputs)
    x = layers.Add()([x, layers.Conv2D(20, 1, name="branch")(layers.ReLU()(x))])
    gate = layers.Dense(20, activation="sigmoid", name="excite")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = layers.Multiply()([x, gate])
    logits = layers.Conv2D(10, 1, name="out")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    model = keras.Model(inputs, layers.Activation("linear")(layers.Flatten()(logits)))
    assert logits_layers(model) == {"out"}

    x = np.random.default_rng(1).random((8, 4, 4, 24), dtype=np.float32)
    factorised = factorise(model, {"mix": 20, "branch": 20, "excite": 20})
    assert factorised.get_layer("mix_u").kernel.shape == (1, 1, 24, 20)
    assert factorised.get_layer("excite_v").kernel.shape == (20, 20)
    np.testing.assert_allclose(factorised.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)


def test_energy_with_fine_tuning_then_int8(tiny_artifacts, tmp_path):
    factorised = lowrank(tiny_artifacts, tmp_path, energy=0.9, epochs=2)
    step = {"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": DIGITS}
    int8 = run_step(step, factorised.sidecar, tmp_path / "int8" / "artifact.json")
    assert int8.kind == "tflite"
    assert [entry.stage for entry in int8.lineage] == ["train", "lowrank.svd", "quantize.int8"]
    assert len(factorised.info.metrics["history"]["loss"]) == 2
    baseline = tiny_artifacts["keras"].info.accuracy["test"]
    assert int8.info.accuracy["test"] >= baseline - 0.05
