"""Config and inventory loading, with schema errors reduced to one line that names the key."""

from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from slimlab.errors import ConfigError


def load_yaml(path: str | Path, what: str):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


def describe(error: jsonschema.ValidationError) -> str:
    """``recipes.int8[1]: 'x' is not of type 'object'``: the failing key's path, then the reason."""
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(top level)'}: {error.message}"


def validate(instance, schema_name: str, source: str) -> None:
    """Validate through ``snakemake.utils.validate`` (which fills schema defaults in place);
    raise its first problem as one :class:`ConfigError` line."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    with resources.as_file(resources.files("slimlab.schemas") / schema_name) as path:
        try:
            snakemake_validate(instance, str(path))
        except WorkflowError as exc:
            # snakemake raises inside ``except ValidationError``; the original rides along as context.
            cause = exc.__context__
            if not isinstance(cause, jsonschema.ValidationError):
                raise
            raise ConfigError(f"{source}: {describe(cause)}") from None


def load_inventory(path: str | Path) -> dict[str, dict]:
    """Device name -> validated device entry (with defaults and its own ``name``)."""
    inventory = load_yaml(path, "device inventory") or {}
    validate(inventory, "devices.schema.yaml", str(path))
    return {name: {**device, "name": name} for name, device in inventory["devices"].items()}
