"""bench.option_sets: checked when the config loads, layered over bench.options, expanded per format."""

import json
import re

import jsonschema
import pytest
import yaml

from slimlab import config, option_sets, registry
from slimlab.errors import ConfigError
from slimlab.lab import payload
from slimlab_payload.runtime import PayloadError, check_options
from tests.support import REPO, validated_bench


def runtime_options_schemas() -> dict:
    """``bench.options``' generated part of the config schema: format -> its options schema."""
    return config.schema("config.schema.yaml")["$defs"]["runtime_options"]["properties"]


def test_the_schema_is_generated_from_every_registered_format():
    assert runtime_options_schemas() == {name: fmt.options_schema() for name, fmt in registry.formats().items()}


def test_the_payload_ships_the_same_schema_beside_each_adapter():
    shipped = payload.entries()
    for name, fmt in registry.formats().items():
        if fmt.runtime_adapter is not None:
            assert json.loads(shipped[f"slimlab_payload/runtimes/{name}.options.json"]) == fmt.options_schema(), name


@pytest.mark.parametrize("kind, options, valid", [
    ("tflite", {}, True),
    ("tflite", {"xnnpack": False}, True),
    ("tflite", {"xnnpack": 0}, False),  # a bool option refuses an int, though Python's bool is one
    ("tflite", {"xnnpack": "false"}, False),
    ("ncnn", {"use_fp16_storage": True, "lightmode": False}, True),
    ("ncnn", {"use_fp16_storage": 1}, False),
    ("ncnn", {"use_fp17_storage": True}, False),
    ("mnn", {"precision": "low", "power": "high"}, True),
    ("mnn", {"precision": "ultra"}, False),
    ("mnn", {"precision": None}, False),
    ("onnx", {}, True),
    ("onnx", {"threads": 2}, False),
])
def test_the_schema_accepts_exactly_what_the_payload_accepts(kind, options, valid):
    schema = runtime_options_schemas()[kind]
    try:
        payload_accepts = check_options(kind, options, schema) == options
    except PayloadError:
        payload_accepts = False
    assert jsonschema.Draft202012Validator(schema).is_valid(options) is valid
    assert payload_accepts is valid


@pytest.mark.parametrize("sets, expected", [
    ({"default": {}, "trt": {"tensorrt": {}}},
     "bench.option_sets.trt: Additional properties are not allowed ('tensorrt' was unexpected)"),
    ({"default": {}, "fp17": {"ncnn": {"use_fp17_storage": True}}},
     "bench.option_sets.fp17.ncnn: Additional properties are not allowed ('use_fp17_storage' was unexpected)"),
    ({"default": {}, "ultra": {"mnn": {"precision": "ultra"}}},
     "bench.option_sets.ultra.mnn.precision: 'ultra' is not one of ['normal', 'high', 'low']"),
    ({"default": {}, "off": {"tflite": {"xnnpack": 0}}},
     "bench.option_sets.off.tflite.xnnpack: 0 is not of type 'boolean'"),
    ({"default": {}, "ort": {"onnx": {"threads": 2}}},
     "bench.option_sets.ort.onnx: Additional properties are not allowed ('threads' was unexpected)"),
    ({"default": {}, "no xnnpack": {"tflite": {"xnnpack": False}}},
     "bench.option_sets: 'no xnnpack' does not match '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'"),
    ({"no-xnnpack": {"tflite": {"xnnpack": False}}}, "bench.option_sets: 'default' is a required property"),
])
def test_a_bad_option_set_is_one_line_naming_the_key(sets, expected):
    with pytest.raises(ConfigError) as err:
        validated_bench(option_sets=sets)
    assert str(err.value) == f"config: {expected}"


def test_without_option_sets_there_is_only_default():
    bench = validated_bench()
    assert bench["option_sets"] == {"default": {}}
    assert option_sets.sets_for(bench, "tflite") == ["default"]
    assert option_sets.merged(bench, "default") == {}


def test_a_set_overrides_the_base_options_key_by_key():
    bench = validated_bench(
        options={"mnn": {"power": "high"}, "ncnn": {"lightmode": False}},
        option_sets={"mnn-low": {"mnn": {"precision": "low"}}, "default": {}, "mnn-power-low": {"mnn": {"power": "low"}}},
    )
    # Nothing the set leaves out is filled in by the schema, so the base's power survives.
    assert option_sets.merged(bench, "mnn-low") == {"mnn": {"power": "high", "precision": "low"}, "ncnn": {"lightmode": False}}
    assert option_sets.merged(bench, "mnn-power-low")["mnn"] == {"power": "low"}
    assert option_sets.merged(bench, "default") == bench["options"]


def test_a_format_is_timed_with_default_and_the_sets_that_name_it():
    bench = validated_bench(option_sets={
        "ncnn-fp32": {"ncnn": {"use_fp16_storage": False}},
        "default": {},
        "no-xnnpack": {"tflite": {"xnnpack": False}},
        "both": {"tflite": {"xnnpack": False}, "ncnn": {"lightmode": False}},
    })
    assert option_sets.sets_for(bench, "tflite") == ["default", "no-xnnpack", "both"]
    assert option_sets.sets_for(bench, "ncnn") == ["default", "ncnn-fp32", "both"]
    assert option_sets.sets_for(bench, "mnn") == ["default"]


def test_the_readme_example_is_a_valid_sweep():
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (example,) = [yaml.safe_load(block) for block in blocks if "option_sets:" in block]
    bench = validated_bench(**example["bench"])
    assert option_sets.sets_for(bench, "mnn") == ["default", "mnn-low"]
    assert option_sets.merged(bench, "ncnn-fp32")["ncnn"]["lightmode"] is True


def test_an_option_its_runner_cannot_honour_is_refused_when_the_config_loads(tmp_path):
    """A native-tool device is asked for ncnn options benchncnn has no flag for: refused, not silently ignored."""
    from slimlab import workflow
    from tests.support import DEFAULT_CONFIG

    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({"devices": {"phone": {
        "transport": "local", "runner": "native", "runtimes": ["tflite", "ncnn"], "workdir": str(tmp_path / "w"),
        "native": {"tools": {"tflite": "/opt/benchmark_model", "ncnn": "/opt/benchncnn"}}}}}))
    cfg = {**DEFAULT_CONFIG, "lab": {"inventory": str(tmp_path / "lab.yaml"), "devices": ["phone"]},
           "bench": {"option_sets": {"default": {}, "no-xnnpack": {"tflite": {"xnnpack": False}},
                                     "ncnn-fp32": {"ncnn": {"use_fp16_storage": False}}}}}
    with pytest.raises(ConfigError, match=r"bench.option_sets.ncnn-fp32.ncnn: device 'phone' runs ncnn with the "
                                          r"native runner, which cannot honour use_fp16_storage"):
        workflow.check(json.loads(json.dumps(cfg)))
    del cfg["bench"]["option_sets"]["ncnn-fp32"]  # xnnpack is one benchmark_model has a flag for
    assert workflow.check(json.loads(json.dumps(cfg))).devices["phone"].runner == "native"
