"""Config, recipe and inventory errors: one line that names the bad key or file."""

import copy

import pytest
import yaml

from slimlab import config, recipes, registry
from slimlab.errors import ConfigError
from slimlab.formats import Format
from slimlab.lab.devices import load_inventory
from tests.support import REPO, slimlab

DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())


def check(cfg: dict):
    cfg = copy.deepcopy(cfg)
    config.validate(cfg, "config.schema.yaml", "config")
    return recipes.build_plan(cfg)


def with_recipe(steps) -> dict:
    cfg = copy.deepcopy(DEFAULT)
    cfg["recipes"] = {"r": steps}
    return cfg


def test_default_config_is_valid():
    plan = check(DEFAULT)
    assert {"baseline", "int8", "pruned_int8", "distilled", "product_order"} <= set(plan.recipes)
    assert len(plan.deployables) == len(plan.recipes) * len(DEFAULT["formats"])


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.update(recipies={}), "'recipies' was unexpected"),
        (lambda c: c["dataset"].update(seed="x"), "dataset.seed: 'x' is not of type 'integer'"),
        (lambda c: c["bench"].update(runs=0), "bench.runs: 0 is less than the minimum of 1"),
        (lambda c: c["lab"].pop("inventory"), "lab: 'inventory' is a required property"),
        (lambda c: c["recipes"].update(empty=[]), "recipes.empty: [] should be non-empty"),
    ],
)
def test_schema_errors_name_the_key(mutate, expected):
    cfg = copy.deepcopy(DEFAULT)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_schema_fills_defaults():
    cfg = copy.deepcopy(DEFAULT)
    del cfg["bench"]
    config.validate(cfg, "config.schema.yaml", "config")
    assert cfg["bench"]["runs"] == 50


@pytest.mark.parametrize(
    "steps, expected",
    [
        (["train", "quantize.int9"], "recipes.r[1]: unknown stage 'quantize.int9'; registered:"),
        (["quantize.int8"], "recipes.r[0]: a recipe starts with a source stage"),
        (["train", "quantize.int8", "quantize.int8"], "recipes.r[2]: stage 'quantize.int8' takes keras; the step before it produces tflite"),
        (["train", "train"], "recipes.r[1]: stage 'train' takes nothing"),
        (["train", {"quantize.int8": {"representative_samples": 0}}], "recipes.r[1]: invalid params for stage 'quantize.int8': representative_samples: Input should be greater than or equal to 1"),
        (["train", {"quantize.int8": {"io": "int4"}}], "io: Input should be 'int8' or 'float'"),
        (["train", {"quantize.int8": {"bits": 4}}], "bits: Extra inputs are not permitted"),
        ([{"train": {"model": "resnet9000"}}], "unknown model 'resnet9000'; registered: cnn"),
        ([{"train": {"model_params": {"depth": 3}}}], "model_params do not fit model 'cnn'"),
        ([{"train": {"epochs": "many"}}], "epochs: Input should be a valid integer"),
        ([{"train": {}, "extra": {}}], "recipes.r[0]: {'train': {}, 'extra': {}} has too many properties"),
    ],
)
def test_recipe_errors_name_the_step(steps, expected):
    with pytest.raises(ConfigError) as err:
        check(with_recipe(steps))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


class CoremlFormat(Format):
    """A format some plugin could register without a ``convert.coreml`` stage."""

    name, files = "coreml", ("model.mlmodel",)


def test_unknown_format_is_rejected():
    cfg = copy.deepcopy(DEFAULT)
    cfg["formats"] = ["tflite", "coreml"]
    with pytest.raises(ConfigError, match="formats: unknown format 'coreml'; registered: keras, mnn"):
        check(cfg)


def test_format_without_a_converter_is_rejected(monkeypatch):
    cfg = copy.deepcopy(DEFAULT)
    config.validate(cfg, "config.schema.yaml", "config")
    cfg["formats"] = ["tflite", "coreml"]
    registered = registry.formats()
    monkeypatch.setattr(registry, "formats", lambda: {**registered, "coreml": CoremlFormat()})
    with pytest.raises(ConfigError, match="formats: no stage converts to 'coreml' \\(there is no 'convert.coreml' stage\\)"):
        recipes.build_plan(cfg)


def test_a_pair_the_converter_refuses_is_unsupported_before_anything_runs():
    cfg = copy.deepcopy(DEFAULT)
    cfg["formats"] = ["tflite", "ncnn", "mnn"]
    plan = check(cfg)
    by_key = {(d.recipe, d.format): d for d in plan.deployables}
    # quantize.* makes an integer model, convert.tflite {sparse: true} a sparse one: their converters say why not.
    for recipe, fmt, reason in (("int8", "ncnn", "convert.ncnn: a quantized TFLite model"),
                                ("pruned_sparse", "ncnn", "convert.ncnn: a TFLite model with sparse tensors"),
                                ("qat", "mnn", "convert.mnn: MNN 3.6.1 cannot convert quantized TFLite models")):
        assert by_key[(recipe, fmt)].artifact is None and by_key[(recipe, fmt)].unsupported.startswith(reason)
    assert by_key[("fp16", "ncnn")].artifact.endswith("/quantize.fp16/convert.ncnn")  # fp16 weights convert
    assert by_key[("pruned_sparse", "mnn")].unsupported.startswith("convert.mnn: MNN 3.6.1 cannot read TFLite's sparse")
    assert by_key[("baseline", "ncnn")].artifact.endswith("/convert.ncnn")


def test_inventory_errors_name_device_and_key(tmp_path):
    bad = tmp_path / "lab.yaml"
    bad.write_text("devices:\n  board 1:\n    transport: local\n")
    with pytest.raises(ConfigError, match=r"lab.yaml: devices: 'board 1' does not match"):
        load_inventory(bad)
    bad.write_text("devices:\n  board1:\n    transport: local\n")
    with pytest.raises(ConfigError, match=r"lab.yaml: devices.board1: 'runner' is a required property"):
        load_inventory(bad)
    bad.write_text("devices: [unclosed\n")
    with pytest.raises(ConfigError, match=r"lab.yaml: line 2: not valid YAML"):
        load_inventory(bad)
    with pytest.raises(ConfigError, match=r"missing.yaml: device inventory not found"):
        load_inventory(tmp_path / "missing.yaml")


def test_cli_validate_prints_one_line(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["recipes"]["int8"][1] = {"quantize.int8": {"io": "int4"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = slimlab("validate", str(path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("slimlab: error: recipes.int8[1]: invalid params for stage 'quantize.int8'")
    ok = slimlab("validate", str(REPO / "config/config.yaml"))
    assert ok.returncode == 0 and f"{len(DEFAULT['recipes'])} recipes" in ok.stdout


@pytest.mark.parametrize("model_params, expected", [
    ({"conv": "sepparable"}, "model_params.conv of model 'cnn': Input should be 'standard', 'separable' or 'factorized'"),
    ({"width": 0}, "model_params.width of model 'cnn': Input should be greater than or equal to 1"),
])
def test_model_params_are_type_checked_at_config_load(model_params, expected):
    with pytest.raises(ConfigError) as err:
        check(with_recipe([{"train": {"model_params": model_params}}]))
    assert expected in str(err.value)
