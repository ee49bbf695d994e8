"""distill: knowledge distillation from a Keras or TFLite teacher into a registered student, on digits."""

import re

import numpy as np
import pytest

from slimlab import registry
from slimlab.errors import ConfigError
from slimlab.kit.distillation import LossWeights, loss_terms, map_layers
from slimlab.stages import run_step
from tests.support import DIGITS

# The tiny teacher is cnn(width 8, dense 32); the student is half as wide.
STUDENT = {"student": "cnn", "student_params": {"width": 4, "dense": 16}}


def distill(tiny_artifacts, tmp_path, teacher="keras", name="distill", **params):
    step = {"stage": "distill", "params": {**STUDENT, "learning_rate": 3e-3, **params}, "dataset": DIGITS}
    return run_step(step, tiny_artifacts[teacher].sidecar, tmp_path / name / "artifact.json")


def validate(**params):
    return registry.stages()["distill"].validate(params, "step")


def test_layer_mapping_picks_the_documented_teacher_layers():
    teacher = ["t1", "t2", "t3", "t4", "t5", "t6"]
    student = ["s1", "s2", "s3"]
    assert map_layers(teacher, student, "uniform") == {"s1": "t2", "s2": "t4", "s3": "t6"}
    assert map_layers(teacher, student, "top") == {"s1": "t4", "s2": "t5", "s3": "t6"}
    assert map_layers(teacher, student, "bottom") == {"s1": "t1", "s2": "t2", "s3": "t3"}
    assert map_layers(teacher[:5], ["a", "b"], "uniform") == {"a": "t2", "b": "t5"}  # ⌊i·5/2⌋, ends at the last
    assert map_layers(teacher[:3], ["a", "b", "c"], "uniform") == {"a": "t1", "b": "t2", "c": "t3"}
    with pytest.raises(ConfigError, match="cannot map 3 student layers onto 2 teacher layers"):
        map_layers(teacher[:2], student, "top")


def test_soft_loss_is_kl_at_temperature_times_t_squared():
    rng = np.random.default_rng(0)
    s, t, y = rng.normal(size=(4, 10)).astype(np.float32), rng.normal(size=(4, 10)).astype(np.float32), np.arange(4)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p_t, p_s = softmax(t / 3), softmax(s / 3)
    expected = np.mean(np.sum(p_t * np.log(p_t / p_s), -1)) * 9
    terms = loss_terms(y, s, t, LossWeights(soft=1, hard=0, temperature=3))
    assert float(terms["soft"]) == pytest.approx(expected, rel=1e-4)
    assert float(loss_terms(y, t, t, LossWeights(soft=1, hard=0, temperature=3))["soft"]) == pytest.approx(0, abs=1e-6)
    assert float(loss_terms(y, s, t, LossWeights(soft=1, hard=0, soft_loss="mse"))["soft"]) == pytest.approx(np.mean((s - t) ** 2), rel=1e-5)


def test_loss_weights_are_validated():
    assert validate(alpha=0.7).loss_weights == {"soft": 0.7, "hard": pytest.approx(0.3), "cos": 0.0, "hidden": 0.0,
                                                "embedding": 0.0, "attention": 0.0}
    distilbert = validate(w_soft=5, w_hard=2, w_cos=1)
    assert distilbert.alpha is None
    assert distilbert.loss_weights == {"soft": 5, "hard": 2, "cos": 1, "hidden": 0, "embedding": 0, "attention": 0}
    with pytest.raises(ConfigError, match="alpha and w_soft/w_hard are alternatives"):
        validate(alpha=0.5, w_soft=1, w_hard=1)
    with pytest.raises(ConfigError, match="w_soft and w_hard go together"):
        validate(w_soft=1)
    with pytest.raises(ConfigError, match="alpha: Input should be less than or equal to 1"):
        validate(alpha=1.5)
    with pytest.raises(ConfigError, match="w_cos: Input should be greater than or equal to 0"):
        validate(w_cos=-1)
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        validate(w_soft=0, w_hard=0)
    with pytest.raises(ConfigError, match="temperature: Input should be greater than 0"):
        validate(temperature=0)


def test_student_and_layers_are_validated():
    with pytest.raises(ConfigError, match="student: unknown model 'nope'; registered: .*cnn"):
        validate(student="nope")
    with pytest.raises(ConfigError, match="student: model_params do not fit model 'cnn'"):
        validate(student_params={"depth": 3})
    with pytest.raises(ConfigError, match="student_layers/teacher_layers only apply to hidden-state matching"):
        validate(student_layers=["conv1"])


def test_kd_from_a_keras_teacher_builds_the_requested_student(tiny_artifacts, tmp_path):
    out = distill(tiny_artifacts, tmp_path, temperature=4, alpha=0.7, epochs=10)
    expected = registry.models()["cnn"].build((8, 8, 1), 10, **STUDENT["student_params"])
    model = out.model
    assert [(layer.name, layer.output_shape) for layer in model.layers] == [(layer.name, layer.output_shape) for layer in expected.layers]
    assert out.info.params.count == expected.count_params()

    metrics = out.info.metrics
    teacher_count = tiny_artifacts["keras"].info.params.count
    assert (metrics["params_teacher"], metrics["params_student"]) == (teacher_count, expected.count_params())
    assert metrics["params_student_over_teacher"] == pytest.approx(expected.count_params() / teacher_count, rel=1e-4)
    assert metrics["layer_mapping"] == {}
    assert metrics["history"]["soft"][-1] < metrics["history"]["soft"][0]
    assert out.info.accuracy["test"] > 0.7  # ten classes: chance is 0.1


def test_kd_from_an_int8_tflite_teacher(tiny_artifacts, tmp_path):
    out = distill(tiny_artifacts, tmp_path, teacher="int8", temperature=2, alpha=0.9, epochs=10)
    assert [entry.stage for entry in out.lineage] == ["train", "quantize.int8", "distill"]
    assert out.kind == "keras"
    assert out.info.metrics["history"]["soft"][-1] < out.info.metrics["history"]["soft"][0]
    assert out.info.accuracy["test"] > 0.7


def test_feature_matching_needs_a_keras_teacher(tiny_artifacts, tmp_path):
    with pytest.raises(ConfigError, match="w_cos/w_hidden/w_embedding/w_attention .* a tflite teacher"):
        distill(tiny_artifacts, tmp_path, teacher="fp32", w_hidden=1.0, epochs=1)


def test_feature_matching_projects_narrower_student_layers(tiny_artifacts, tmp_path):
    out = distill(tiny_artifacts, tmp_path, w_soft=1, w_hard=1, w_hidden=1, w_cos=1, epochs=6)
    metrics = out.info.metrics
    assert metrics["layer_mapping"] == {"conv1": "conv1", "conv2": "conv2", "fc1": "fc1"}
    assert metrics["history"]["hidden"][-1] < metrics["history"]["hidden"][0]
    assert metrics["history"]["cos"][-1] < metrics["history"]["cos"][0]
    assert not [layer.name for layer in out.model.layers if "projection" in layer.name]  # the student stays plain


def test_feature_maps_of_different_spatial_size_are_refused(tiny_artifacts, tmp_path):
    # The student's conv2 sees 4x4 maps (after pool1); the teacher's conv1 sees 8x8.
    with pytest.raises(ConfigError, match=r"conv2: hidden states differ in size beyond their width .*\(4, 4, 8\).*\(8, 8, 8\)"):
        distill(tiny_artifacts, tmp_path, w_hidden=1, student_layers=["conv2"], teacher_layers=["conv1"], epochs=1)
    with pytest.raises(ConfigError, match="teacher_layers: no layer named nope"):
        distill(tiny_artifacts, tmp_path, w_hidden=1, teacher_layers=["nope"], epochs=1)


# --- transformers: TinyBERT's layer maps and losses, DistilBERT's initialisation ------------------

VIT_TEACHER = {"patch": 4, "depth": 4, "width": 16, "heads": 4}
VIT_STUDENT = {"student": "vit", "student_params": {"patch": 4, "depth": 2, "width": 8, "heads": 4}}
TINYBERT_INTERMEDIATE = {"w_soft": 0, "w_hard": 0, "w_embedding": 1, "w_attention": 1, "w_hidden": 1}


@pytest.mark.parametrize("n, m, uniform, top, bottom", [
    (12, 4, [3, 6, 9, 12], [9, 10, 11, 12], [1, 2, 3, 4]),  # TinyBERT's 4-layer student of BERT-base: g(m) = 3m
    (8, 2, [4, 8], [7, 8], [1, 2]),
    (6, 3, [2, 4, 6], [4, 5, 6], [1, 2, 3]),  # DistilBERT: every other layer
    (4, 1, [4], [4], [1]),
    (5, 2, [2, 5], [4, 5], [1, 2]),
    (3, 3, [1, 2, 3], [1, 2, 3], [1, 2, 3]),
])
def test_layer_maps_for_teacher_and_student_depths(n, m, uniform, top, bottom):
    teacher, student = list(range(1, n + 1)), [f"s{i}" for i in range(1, m + 1)]
    for how, expected in (("uniform", uniform), ("top", top), ("bottom", bottom)):
        assert map_layers(teacher, student, how) == dict(zip(student, expected)), how


def test_block_map_and_distilbert_initialisation_copy_the_mapped_teacher_blocks():
    from slimlab.kit import transformer
    from slimlab.kit.distillation import attention_matches, block_map

    teacher = registry.models()["vit"].build((8, 8, 1), 10, **VIT_TEACHER)
    student = registry.models()["vit"].build((8, 8, 1), 10, **{**VIT_TEACHER, "depth": 2})
    blocks = block_map(teacher, student, "uniform")
    assert blocks == {0: 1, 1: 3}
    assert attention_matches(teacher, student, blocks, "scores") == {
        f"block{s}_head{h}_scores": f"block{t}_head{h}_scores" for s, t in blocks.items() for h in range(4)}
    transformer.copy_blocks(student, teacher, blocks)
    for layer in student.layers:
        if layer.weights:
            source = re.sub(r"^block(\d+)_", lambda m: f"block{blocks[int(m.group(1))]}_", layer.name)
            for mine, theirs in zip(layer.get_weights(), teacher.get_layer(source).get_weights()):
                np.testing.assert_array_equal(mine, theirs)
    narrow = registry.models()["vit"].build((8, 8, 1), 10, **VIT_STUDENT["student_params"])
    with pytest.raises(ConfigError, match="student layer 'patch_embed' and teacher layer 'patch_embed' differ in shape"):
        transformer.copy_blocks(narrow, teacher, {0: 1, 1: 3})
    with pytest.raises(ConfigError, match="student block 0 has 2 heads, teacher block 1 has 4"):
        attention_matches(teacher, registry.models()["vit"].build((8, 8, 1), 10, **{**VIT_TEACHER, "heads": 2}), blocks, "scores")


def test_transformer_params_are_validated():
    assert validate(w_soft=0, w_hard=0, w_attention=1).loss_weights["attention"] == 1
    with pytest.raises(ConfigError, match="student_layers/teacher_layers only apply to hidden-state matching"):
        validate(w_attention=1, student_layers=["block0_out"])
    with pytest.raises(ConfigError, match="student_init: Input should be 'random', 'teacher_layers' or 'input'"):
        validate(student_init="every_other")


@pytest.fixture(scope="module")
def vit_teacher(tmp_path_factory):
    step = {"stage": "train", "params": {"model": "vit", "epochs": 4, "learning_rate": 3e-3, "model_params": VIT_TEACHER},
            "dataset": DIGITS}
    return run_step(step, None, tmp_path_factory.mktemp("vit") / "train" / "artifact.json")


def distill_vit(parent, tmp_path, name, **params):
    step = {"stage": "distill", "params": {"learning_rate": 3e-3, **params}, "dataset": DIGITS}
    return run_step(step, parent.sidecar, tmp_path / name / "artifact.json")


@pytest.mark.slow
def test_tinybert_two_steps_every_loss_term_is_nonzero_and_falls(vit_teacher, tiny_artifacts, tmp_path):
    intermediate = distill_vit(vit_teacher, tmp_path, "intermediate", **VIT_STUDENT, **TINYBERT_INTERMEDIATE,
                               w_cos=1, epochs=4)
    metrics = intermediate.info.metrics
    assert metrics["block_mapping"] == {"0": 1, "1": 3}
    assert metrics["layer_mapping"] == {"block0_out": "block1_out", "block1_out": "block3_out"}
    for term in ("embedding", "attention", "hidden", "cos"):
        losses = metrics["history"][term]
        assert losses[0] > 0 and losses[-1] < losses[0], (term, losses)

    prediction = distill_vit(intermediate, tmp_path, "prediction", student_init="input", w_soft=1, w_hard=1,
                             temperature=2, epochs=3)
    metrics = prediction.info.metrics
    assert [step.stage for step in prediction.lineage] == ["train", "distill", "distill"]
    assert metrics["teacher"] == str(vit_teacher.dir)  # the original teacher, not the intermediate student
    assert metrics["params_teacher"] == vit_teacher.info.params.count
    assert metrics["params_student"] == intermediate.model.count_params()
    for term in ("soft", "hard"):
        losses = metrics["history"][term]
        assert losses[0] > 0 and losses[-1] < losses[0], (term, losses)
    assert prediction.info.accuracy["test"] > 0.5  # ten classes: chance is 0.1

    with pytest.raises(ConfigError, match="student_init input needs the Keras student of a distill step"):
        distill_vit(vit_teacher, tmp_path, "no-student", student_init="input", alpha=0.5, epochs=1)
    with pytest.raises(ConfigError, match="distill: the teacher is not a transformer"):
        distill(tiny_artifacts, tmp_path, name="cnn-teacher", **VIT_STUDENT, w_attention=1, epochs=1)


@pytest.mark.slow
def test_distilbert_student_starts_from_every_other_teacher_block(vit_teacher, tmp_path):
    # A learning rate of 1e-9 leaves the initial weights where the stage put them.
    out = distill_vit(vit_teacher, tmp_path, "distilbert", student="vit", student_params={**VIT_TEACHER, "depth": 2},
                      student_init="teacher_layers", w_soft=5, w_hard=2, w_cos=1, epochs=1, learning_rate=1e-9)
    assert out.info.metrics["block_mapping"] == {"0": 1, "1": 3}
    for student_layer, teacher_layer in (("block0_head2_q", "block1_head2_q"), ("block1_mlp2", "block3_mlp2"),
                                         ("embedding", "embedding"), ("logits", "logits")):
        for mine, theirs in zip(out.model.get_layer(student_layer).get_weights(),
                                vit_teacher.model.get_layer(teacher_layer).get_weights()):
            np.testing.assert_allclose(mine, theirs, atol=1e-6)
