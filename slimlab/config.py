"""Config and inventory loading: strict YAML, JSON Schemas with defaults, one-line errors that name the key.

The schemas live in ``workflow/schemas/``. The part of the config schema that the
plugins own is generated: ``bench.options.<format>`` comes from each registered
format's runtime options model. The measurement keys are defined once, in the config
schema's ``$defs.measurement``: they are put into its ``bench`` block, and without their
defaults into every device of the inventory schema.
"""

import copy
import math
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from slimlab import formats
from slimlab.errors import ConfigError
from slimlab.records import MEASUREMENT_KEYS

# A YAML file is read whole: larger than this, it is not a config.
MAX_YAML_BYTES = 4 << 20
# A config is a few levels deep; PyYAML composes nodes recursively and would hit Python's recursion limit.
MAX_YAML_DEPTH = 50


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would keep the last one silently), aliases (a "billion
    laughs" alias bomb would exhaust memory) and nesting deeper than MAX_YAML_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(
                None, None, f"aliases (*{event.anchor}) are not allowed in slimlab files", event.start_mark)
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.constructor.ConstructorError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path, what: str):
    """Parse a YAML file strictly; every problem is one ConfigError line naming the file (and line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {what} is {len(raw)} bytes; a YAML file over {MAX_YAML_BYTES} bytes is refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None


def load_mapping(path: str | Path, what: str) -> dict:
    data = load_yaml(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} is a YAML mapping of keys, not {type(data).__name__}")
    return data


def key_path(parts) -> str:
    """``recipes.int8[1]`` from ("recipes", "int8", 1)."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def describe(error: jsonschema.ValidationError) -> str:
    return f"{key_path(error.absolute_path)}: {error.message}"


def check_finite(instance, source: str, path=()) -> None:
    """NaN and infinity are never valid settings (a NaN timeout never fires)."""
    if isinstance(instance, float) and not math.isfinite(instance):
        raise ConfigError(f"{source}: {key_path(path)}: {instance} is not a finite number")
    if isinstance(instance, dict):
        for key, value in instance.items():
            check_finite(value, source, (*path, key))
    elif isinstance(instance, list):
        for index, value in enumerate(instance):
            check_finite(value, source, (*path, index))


def _with_defaults(validator_class):
    """A validator that also fills in schema defaults, as snakemake.utils.validate does."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_defaults})


def _load(name: str) -> dict:
    return yaml.safe_load((resources.files("slimlab.schemas") / name).read_text())


@cache
def _measurement() -> dict:
    """The measurement keys' rules, with their defaults: the config schema's ``$defs.measurement``."""
    rules = _load("config.schema.yaml")["$defs"]["measurement"]
    if tuple(rules) != MEASUREMENT_KEYS:
        raise RuntimeError(f"config.schema.yaml: $defs.measurement defines {list(rules)}; "
                           f"slimlab.records.MEASUREMENT_KEYS names {list(MEASUREMENT_KEYS)}")
    return rules


def _insert(properties: dict, added: dict, before: str) -> dict:
    """``properties`` with ``added`` in front of the key ``before``. The order is kept: of several errors,
    the first of the best is the one reported."""
    items = list(properties.items())
    at = list(properties).index(before)
    return dict(items[:at] + list(copy.deepcopy(added).items()) + items[at:])


@cache
def schema(name: str) -> dict:
    """A schema from ``workflow/schemas``, with its generated parts filled in."""
    loaded = _load(name)
    if "runtime_options" in loaded.get("$defs", {}):
        loaded["$defs"]["runtime_options"] = {
            "type": "object", "additionalProperties": False, "properties": formats.options_schemas(),
            "description": "runtime options per format, each format's own (slimlab plugins)",
        }
    if name == "config.schema.yaml":
        bench = loaded["properties"]["bench"]
        bench["properties"] = _insert(bench["properties"], _measurement(), before="options")
    elif name == "devices.schema.yaml":
        # A device's measurement key overrides the config's; one it leaves out must keep the config's value.
        overrides = {key: {k: v for k, v in rule.items() if k != "default"} for key, rule in _measurement().items()}
        device = loaded["properties"]["devices"]["additionalProperties"]
        device["properties"] = _insert(device["properties"], overrides, before="emulated")
    return loaded


def validate(instance, schema_name: str, source: str) -> None:
    """Validate against a schema, filling its defaults in place; the first problem is one ConfigError line."""
    check_finite(instance, source)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema(schema_name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise ConfigError(f"{source}: {describe(error)}")
