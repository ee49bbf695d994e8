"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

import pydantic


class SlimlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(SlimlabError):
    """The config, a recipe, a stage's params or the device inventory is invalid."""


class PluginError(SlimlabError):
    """A plugin failed to load or registered something invalid."""


class ArtifactError(SlimlabError):
    """A model file or its sidecar is missing, truncated or corrupt."""


class Unsupported(ArtifactError):
    """A known limit: this model can never become this format, as things are installed (a converter that refuses
    the model's kind, an op the target lacks). Raise it from a stage with the reason; the step is recorded as
    ``unsupported``, not failed: the report and the deployables say why, and neither the run nor the nightly
    counts it as a failure. It is tried again when the installed packages or plugins change."""


class DeviceError(SlimlabError):
    """A device could not be reached or a command on it failed."""


def problems(exc: pydantic.ValidationError, model: type[pydantic.BaseModel] | None = None) -> str:
    """``key: message; other.key: message`` for every problem pydantic found.

    A missing field says what it is for (its description), so the line tells how to fix it.
    """
    found = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        field = model.model_fields.get(str(err["loc"][0])) if model and err["loc"] else None
        if err["type"] == "missing" and field is not None and field.description:
            message += f" ({field.description})"
        found.append(f"{key}: {message}" if key else message)
    return "; ".join(found)


def validated(model: type[pydantic.BaseModel], values: dict | None, where: str):
    """``model`` built from ``values``, or one ConfigError line that names ``where`` and every bad key."""
    try:
        return model.model_validate(values or {})
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{where}: {problems(exc, model)}") from None
