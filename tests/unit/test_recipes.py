"""Recipe paths: shared prefixes, param changes, safe path segments."""

import copy

import yaml

from slimlab import config, recipes
from tests.support import REPO

DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())


def plan_for(recipe_map: dict, **overrides) -> recipes.Plan:
    cfg = copy.deepcopy(DEFAULT)
    cfg["recipes"] = recipe_map
    cfg.update(overrides)
    config.validate(cfg, "config.schema.yaml", "config")
    return recipes.build_plan(cfg)


def test_recipes_with_a_common_prefix_share_its_artifacts():
    plan = plan_for({"a": ["train"], "b": ["train", "quantize.int8"], "c": ["train", {"quantize.int8": {"io": "float"}}]})
    trains = {plan.recipes[r][0] for r in "abc"}
    assert len(trains) == 1
    assert plan.recipes["b"][1] != plan.recipes["c"][1]
    assert plan.recipes["c"][1].endswith("/quantize.int8@io=float")


def test_params_equal_to_defaults_do_not_change_the_path():
    plan = plan_for({"a": ["train", "quantize.int8"], "b": ["train", {"quantize.int8": {"io": "int8"}}]})
    assert plan.recipes["a"] == plan.recipes["b"]


def test_a_changed_param_renames_only_its_step_and_descendants():
    before = plan_for({"r": ["train", {"quantize.int8": {"representative_samples": 200}}]}, formats=["tflite"])
    after = plan_for({"r": ["train", {"quantize.int8": {"representative_samples": 100}}]}, formats=["tflite"])
    assert before.recipes["r"][0] == after.recipes["r"][0]
    assert before.recipes["r"][1] != after.recipes["r"][1]


def test_stage_defaults_and_model_flow_into_train():
    plan = plan_for({"r": ["train"]}, stage_defaults={"train": {"epochs": 2}})
    step = plan.step(plan.recipes["r"][0])
    assert step["params"]["epochs"] == 2 and step["params"]["model"] == "cnn"
    assert plan.recipes["r"][0].endswith("/train@epochs=2")


def test_dataset_settings_root_the_paths():
    plan = plan_for({"r": ["train"]})
    assert plan.recipes["r"][0].startswith("mnist@seed=42+test=0.2+val=0.1/")


def test_keras_recipes_get_a_convert_step_per_format():
    plan = plan_for({"fp32": ["train"], "int8": ["train", "quantize.int8"]})
    deploy = {(d.recipe, d.format): d.artifact for d in plan.deployables}
    assert deploy[("fp32", "tflite")].endswith("/train@epochs=8/convert.tflite")
    assert deploy[("int8", "tflite")] == plan.recipes["int8"][-1]


def test_unsafe_values_hash_into_a_safe_segment():
    text = recipes.segment("stage", {"layers": ["conv 1", "x/../y"], "note": "a;b"})
    assert text.startswith("stage@") and "/" not in text and " " not in text and ";" not in text
    assert text == recipes.segment("stage", {"note": "a;b", "layers": ["conv 1", "x/../y"]})
    assert text != recipes.segment("stage", {"layers": ["conv 1"], "note": "a;b"})
